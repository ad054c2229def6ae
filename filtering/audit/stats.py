"""The audit figures of one data file's rows: counts, hours, durations, WER, speaking rate, rejection examples,
code usage, n_frames vs duration (`_Acc`); `partial.scan_file` reduces them to a mergeable partial and
`partial.stats_figures` turns the merged partial into the `audit.json` dict.

The dict is written as `audit.json`; the HTML page shows the same numbers (every number on
the page carries a `data-key` pointing into it, so a test can check they agree).

Folder kinds:
    tokenize         shards/*.parquet (token rows), quarantine/, _manifest.json
    filter-dialogue  kept/ + rejects/ (dialogue rows), quarantine/, _manifest.json
    filter-tts       kept/ + rejects/ (token rows + ASR columns), quarantine/, _manifest.json
"""

from __future__ import annotations

from collections import defaultdict

import jiwer
import numpy as np
import pyarrow as pa

from filtering.normalize import normalize
from filtering.rules import reason_code
from tokenization.dialogue_schema import ASSISTANT, USER
from tokenization.schema import ShardCodec

N_EXAMPLES = 5


def diff_ops(ref: str, hyp: str) -> list[dict]:
    """Word alignment of normalized ref/hyp as [{"op": equal|substitute|delete|insert, "ref", "hyp"}]."""
    r, h = ref.split(), hyp.split()
    if not r:
        return [{"op": "insert", "ref": "", "hyp": hyp}] if h else []
    out = jiwer.process_words(ref, hyp)
    ops = []
    for chunk in out.alignments[0]:
        ops.append({"op": chunk.type, "ref": " ".join(r[chunk.ref_start_idx:chunk.ref_end_idx]),
                    "hyp": " ".join(h[chunk.hyp_start_idx:chunk.hyp_end_idx])})
    return ops


class _Acc:
    """Accumulates per-item figures (an item = one utterance, or one dialogue turn)."""

    def __init__(self):
        self.items: list[dict] = []  # {id, source, speaker, duration, wer, rate, status}
        self.rows: list[dict] = []  # {id, status, sha1, seconds}
        self.examples: dict[str, list] = defaultdict(list)
        self.reasons: dict[str, int] = defaultdict(int)
        self.code_counts: np.ndarray | None = None
        self.frames: list[tuple[str, int, float]] = []
        self.meta: dict[str, str] = {}

    def add_codes(self, codes_col: pa.Array, n_cb: int, size: int) -> None:
        flat = codes_col.drop_null() if hasattr(codes_col, "drop_null") else codes_col
        values = pa.concat_arrays([c.flatten().flatten() for c in (flat.chunks if isinstance(flat, pa.ChunkedArray) else [flat])]) if len(flat) else pa.array([], pa.uint16())
        v = values.to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, n_cb)  # [sum T, K]
        if self.code_counts is None:
            self.code_counts = np.zeros((n_cb, size), np.int64)
        for k in range(n_cb):
            self.code_counts[k] += np.bincount(v[:, k], minlength=size)[:size]


def _speaking_rate(n_words, dur):
    return (n_words / dur) if n_words is not None and dur else None


def _example(rec_id: str, text: str, hyp: str, ref_norm: str, language: str, wer, reason: str, turn=None) -> dict:
    hyp_norm = normalize(hyp or "", language)
    return {"id": rec_id, "turn": turn, "text": text, "asr_hyp": hyp, "text_ref_norm": ref_norm, "hyp_norm": hyp_norm,
            "wer": None if wer is None else round(float(wer), 4), "reject_reason": reason, "diff": diff_ops(ref_norm or "", hyp_norm)}


def _token_table(acc: _Acc, table: pa.Table, status: str, meta: dict) -> None:
    codec = ShardCodec.of(meta)
    n_cb, size, fr = codec.n_codebooks, codec.codebook_size, codec.frame_rate
    scored = "wer" in table.column_names
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c != "codes"}
    n_frames = table.column("n_frames").to_pylist()
    for i, uid in enumerate(cols["utt_id"]):
        dur = cols["duration_s"][i]
        acc.rows.append({"id": uid, "status": status, "sha1": cols["audio_sha1"][i], "seconds": dur or 0.0})
        acc.items.append({"id": uid, "source": cols["source"][i], "speaker": cols["speaker"][i], "duration": dur, "status": status,
                          "wer": cols["wer"][i] if scored else None,
                          "rate": _speaking_rate(len((cols["text"][i] or "").split()), dur)})
        if n_frames[i] is not None and dur is not None:
            acc.frames.append((uid, int(n_frames[i]), float(dur) * fr))
        if status == "rejected":
            code = reason_code(cols["reject_reason"][i])
            acc.reasons[code] += 1
            if len(acc.examples[code]) < N_EXAMPLES:
                acc.examples[code].append(_example(uid, cols["text"][i], cols["asr_hyp"][i], cols["text_ref_norm"][i],
                                                   cols["language"][i], cols["wer"][i], cols["reject_reason"][i]))
    acc.add_codes(table.column("codes"), n_cb, size)


def _dialogue_table(acc: _Acc, table: pa.Table, status: str, meta: dict) -> None:
    codec = ShardCodec.of(meta)
    n_cb, size, fr = codec.n_codebooks, codec.codebook_size, codec.frame_rate
    turns = table.column("turns").combine_chunks()
    flat = turns.flatten()  # StructArray of all turns, audio never turned into Python objects
    f = {name: flat.field(name) for name in ("role", "duration_s", "n_frames", "wer", "n_ref_words", "asr_hyp", "text", "text_ref_norm")}
    f = {k: v.to_pylist() for k, v in f.items()}
    offsets = turns.offsets.to_pylist()
    ids, src, spk = (table.column(c).to_pylist() for c in ("dialogue_id", "source", "speaker"))
    lang, sha, reason = (table.column(c).to_pylist() for c in ("language", "audio_sha1", "reject_reason"))
    for i, did in enumerate(ids):
        lo, hi = offsets[i], offsets[i + 1]
        acc.rows.append({"id": did, "status": status, "sha1": sha[i], "seconds": float(sum(f["duration_s"][lo:hi]))})
        if status == "rejected":
            code = reason_code(reason[i])
            acc.reasons[code] += 1
        shown = False
        for j in range(lo, hi):
            dur = f["duration_s"][j]
            acc.items.append({"id": f"{did}#{j - lo}", "source": src[i], "speaker": spk[i] if f["role"][j] == ASSISTANT else USER,
                              "duration": dur, "status": status, "wer": f["wer"][j],
                              "rate": _speaking_rate(f["n_ref_words"][j], dur) if f["wer"][j] is not None else None})
            if f["n_frames"][j]:
                acc.frames.append((f"{did}#{j - lo}", int(f["n_frames"][j]), float(dur) * fr))
            bad_turn = f"(turn {j - lo})" in (reason[i] or "")
            if status == "rejected" and bad_turn and not shown and len(acc.examples[code]) < N_EXAMPLES:
                acc.examples[code].append(_example(did, f["text"][j], f["asr_hyp"][j], f["text_ref_norm"][j], lang[i],
                                                   f["wer"][j], reason[i], j - lo))
                shown = True
    acc.add_codes(flat.field("codes"), n_cb, size)
