"""One input shard file -> its dedup index rows (task side; no Ray): what every later phase reads instead of
the shard.

Per row: `row` (its position in the file), `utt_id`, `duration_s`, the quality facts `--keep best` ranks by
(`dnsmos_ovrl`, `wer`), the exact keys (`sha_key`: the decoded samples' sha1, `codes_key`: the codes' hash),
`text_key` (the transcript's hash, `words`), `grams` (its word n-gram hashes, for `--against`), `fp` (the
landmark fingerprint, `tokenization.fingerprint`) and `bands` (LSH band keys of the fingerprint's MinHash).
Token shards carry `audio_fp` (written by tokenize and filter); dialogue shards carry their turns' FLAC, which
is fingerprinted here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokenization import storage
from tokenization.dialogue_schema import flac_to_pcm
from tokenization.errors import UserError
from tokenization.fingerprint import fingerprint

INDEX_SCHEMA = pa.schema([
    ("row", pa.int32()), ("utt_id", pa.string()), ("duration_s", pa.float32()), ("dnsmos_ovrl", pa.float32()),
    ("wer", pa.float32()), ("sha_key", pa.uint64()), ("codes_key", pa.uint64()), ("text_key", pa.uint64()),
    ("grams", pa.list_(pa.uint64())), ("fp", pa.list_(pa.uint32())), ("bands", pa.list_(pa.uint64())),
])
KEYS = ("sha_key", "codes_key", "text_key")  # exact keys: 0 where a row has none


@dataclass(frozen=True)
class DedupSettings:
    """What decides a match (part of the dedup run id: another setting is another index).

    `near_jaccard`: fingerprint Jaccard at or above which two rows are the same recording (the margin between
    copies and negatives: benchmarks/dedup_quality.py). `bands` x `rows_per_band` MinHash values: a pair at
    Jaccard J becomes a candidate with probability 1 - (1 - J^r)^b (0.9999 at 0.25, 0.999 at 0.2 with 32 x 1);
    every candidate is verified by exact Jaccard, so loose bands cost only verification.
    `ngram`: words of a transcript n-gram shared with an eval row (13, as GPT-3's decontamination); a text of
    fewer words matches an eval text only whole."""

    near_jaccard: float = 0.2
    bands: int = 32
    rows_per_band: int = 1
    ngram: int = 13

    def to_dict(self) -> dict:
        return asdict(self)


def index_table(uri: str, settings: DedupSettings) -> pa.Table:
    """The index rows of one token, scored-TTS or dialogue shard file (`INDEX_SCHEMA`)."""
    with storage.open_input(uri) as f:
        names = pq.read_schema(f).names
    if "turns" in names:
        return _dialogue_index(uri, settings)
    if "audio_fp" not in names:
        raise UserError(f"{uri}: written before token schema 4 (no audio_fp column); rerun pipelines.tokenize "
                        "(or pipelines.filter) into a new --output, or with --overwrite, then dedup it")
    cols = ["utt_id", "text", "duration_s", "codes", "audio_sha1", "audio_fp"]
    cols += [c for c in ("dnsmos_ovrl", "wer") if c in names]
    with storage.open_input(uri) as f:
        t = pq.read_table(f, columns=cols)
    n = t.num_rows
    fp = t.column("audio_fp").combine_chunks()
    if fp.null_count:
        fp = pa.array([v if v is not None else [] for v in fp.to_pylist()], pa.list_(pa.uint32()))
    texts = [words(x) for x in t.column("text").to_pylist()]
    codes = t.column("codes").combine_chunks()
    return _table(settings, t.column("utt_id"), t.column("duration_s"), _opt(t, "dnsmos_ovrl", n), _opt(t, "wer", n),
                  [_hex_key(s) for s in t.column("audio_sha1").to_pylist()], [_codes_key(codes, i) for i in range(n)], texts, fp)


def _dialogue_index(uri: str, settings: DedupSettings) -> pa.Table:
    """Dialogue rows: one index row per dialogue; its fingerprint is the union of its turns'."""
    with storage.open_input(uri) as f:
        t = pq.read_table(f, columns=["dialogue_id", "turns", "audio_sha1", "wer"])
    ids, sha, fps, texts, seconds, dnsmos, codes = [], [], [], [], [], [], []
    for rid, turns, s in zip(*(t.column(c).to_pylist() for c in ("dialogue_id", "turns", "audio_sha1"))):
        ids.append(rid)
        sha.append(_hex_key(s))
        fps.append(np.unique(np.concatenate([fingerprint(*flac_to_pcm(x["audio_flac"])) for x in turns] or [np.zeros(0, np.uint32)])))
        texts.append(words(" ".join(x["text"] or "" for x in turns)))
        seconds.append(sum(float(x["duration_s"] or 0) for x in turns))
        q = [x["dnsmos_ovrl"] for x in turns if x.get("dnsmos_ovrl") is not None]
        dnsmos.append(float(np.mean(q)) if q else None)
        codes.append(_digest(b"".join(np.asarray(x["codes"] or [], np.uint16).tobytes() for x in turns)) if any(x["codes"] for x in turns) else 0)
    fp = pa.array([f.tolist() for f in fps], pa.list_(pa.uint32()))
    return _table(settings, pa.array(ids, pa.string()), pa.array(seconds, pa.float32()), pa.array(dnsmos, pa.float32()),
                  t.column("wer"), sha, codes, texts, fp)


def _table(settings: DedupSettings, ids, seconds, dnsmos, wer, sha: list[int], codes: list[int], texts: list[list[str]],
           fp: pa.ListArray) -> pa.Table:
    n = len(texts)
    cols = {
        "row": pa.array(np.arange(n, dtype=np.int32)), "utt_id": ids, "duration_s": seconds, "dnsmos_ovrl": dnsmos,
        "wer": wer, "sha_key": pa.array(sha, pa.uint64()), "codes_key": pa.array(codes, pa.uint64()),
        "text_key": pa.array([_digest(" ".join(x).encode()) if x else 0 for x in texts], pa.uint64()),
        "grams": word_grams(texts, settings.ngram),
        "fp": fp, "bands": band_keys(fp, settings.bands, settings.rows_per_band),
    }
    return pa.Table.from_pydict({k: _cast(v, INDEX_SCHEMA.field(k).type) for k, v in cols.items()}, schema=INDEX_SCHEMA)


def _cast(col, typ: pa.DataType):
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col if col.type == typ else col.cast(typ)


def _opt(t: pa.Table, name: str, n: int) -> pa.Array:
    return t.column(name).combine_chunks().cast(pa.float32()) if name in t.column_names else pa.nulls(n, pa.float32())


def _digest(data: bytes) -> int:
    """A 64-bit key of some bytes (never 0: 0 means none)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


def _hex_key(sha1: str | None) -> int:
    return (int(sha1[:16], 16) or 1) if sha1 else 0


def _codes_key(codes: pa.ListArray, i: int) -> int:
    """The row's codes as one key (the same codes, the same key); 0 for a row without codes."""
    cell = codes[i]
    if not cell.is_valid or len(cell) == 0:
        return 0
    return _digest(cell.values.flatten().to_numpy(zero_copy_only=False).tobytes())


# --- transcripts: words, text keys, word n-grams ---------------------------------------------------------

_NON_WORD = re.compile(r"[\W_]+")
_GRAM_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64


def words(text: str) -> list[str]:
    """A transcript as dedup compares it: NFKC, lower case, every run of non-word characters a space (as GPT-3's
    decontamination; Whisper's English normalizer costs 50x more per row and changes nothing a match needs)."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text or "").lower()).split()


def word_grams(texts: list[list[str]], n: int) -> pa.ListArray:
    """Per text, 64-bit hashes of its word n-grams; a text of fewer than n words is one gram of all its words
    (so it matches only an equal text); none for an empty text. Vectorized over all texts: a window's hash is a
    difference of prefix sums of word hashes times powers of an odd multiplier, mod 2^64."""
    lengths = np.array([len(t) for t in texts], np.int64)
    flat = np.array([zlib.crc32(w.encode()) for t in texts for w in t], np.uint64) + np.uint64(1)
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    k = np.minimum(lengths, n)
    per = np.where(lengths == 0, 0, lengths - k + 1)  # windows per text
    offsets = np.concatenate([[0], np.cumsum(per)]).astype(np.int32)
    if not flat.size:
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array([], pa.uint64()))
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.concatenate([[np.uint64(1)], np.full(len(flat), _GRAM_MUL)]), dtype=np.uint64)
        inv = np.cumprod(np.concatenate([[np.uint64(1)], np.full(len(flat), _inverse(_GRAM_MUL))]), dtype=np.uint64)
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(flat * powers[:-1], dtype=np.uint64)])
        text_of = np.repeat(np.arange(len(texts)), per)
        first = starts[text_of] + (np.arange(offsets[-1]) - offsets[:-1][text_of])  # each window's first word
        last = first + k[text_of]
        g = (prefix[last] - prefix[first]) * inv[first] + k[text_of].astype(np.uint64)  # k tags a short text's gram
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(_mix64(g), pa.uint64()))


def _inverse(a: np.uint64) -> np.uint64:
    """a^-1 mod 2^64 for odd a (Newton's iteration doubles the correct bits each step)."""
    x = a
    with np.errstate(over="ignore"):
        for _ in range(6):
            x = x * (np.uint64(2) - a * x)
    return x


# --- MinHash LSH ------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_SEEDS = _mix64(np.arange(1, 1025, dtype=np.uint64))  # fixed: the same MinHash functions in every run


def minhash(fp: pa.ListArray, n_hashes: int) -> np.ndarray:
    """[B, n_hashes] uint32 MinHash signatures of B fingerprints (multiply-shift hashes of the 32-bit values);
    rows with an empty fingerprint are all 0xFFFFFFFF."""
    offsets = fp.offsets.to_numpy()
    offsets = offsets - offsets[0]
    values = fp.flatten().to_numpy(zero_copy_only=False).astype(np.uint64)
    lengths = np.diff(offsets)
    out = np.full((len(lengths), n_hashes), 0xFFFFFFFF, np.uint64)
    nonempty = lengths > 0
    if not values.size:
        return out.astype(np.uint32)
    starts = offsets[:-1][nonempty]
    for k in range(n_hashes):
        a, b = _SEEDS[2 * k] | np.uint64(1), _SEEDS[2 * k + 1]
        with np.errstate(over="ignore"):
            h = (values * a + b) >> np.uint64(32)
        out[nonempty, k] = np.minimum.reduceat(h, starts)
    return out.astype(np.uint32)


def band_keys(fp: pa.ListArray, bands: int, rows_per_band: int) -> pa.ListArray:
    """Per row, `bands` 64-bit keys (band b's `rows_per_band` MinHash values, hashed with b); none for an
    empty fingerprint. Two rows that share a key are a candidate pair."""
    fp = fp.combine_chunks() if isinstance(fp, pa.ChunkedArray) else fp
    sig = minhash(fp, bands * rows_per_band).astype(np.uint64).reshape(len(fp), bands, rows_per_band)
    with np.errstate(over="ignore"):
        acc = np.arange(1, bands + 1, dtype=np.uint64)[None, :] * _GRAM_MUL
        for r in range(rows_per_band):
            acc = _mix64(acc ^ sig[:, :, r])
    has = np.diff(fp.offsets.to_numpy()) > 0
    offsets = np.concatenate([[0], np.cumsum(np.where(has, bands, 0))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(acc[has].reshape(-1), pa.uint64()))
