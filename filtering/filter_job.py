"""The filter job for the sharded-job engine (`tokenization/engine/`): its steps, its sink, `filter_job`; no Ray.

    read   (task)   dialogues: a manifest unit -> `DialogueSpec` / `QuarantineRow`
                    (`tokenization.readers.dialogue.read_dialogue_unit`); TTS: a token-shard file -> token rows
    load   (task)   read and validate the audio (`tokenization.audio.read_ref`)
    quality (actors) `QualityBatch` (with `--quality`): DNSMOS / Silero VAD loaded once; fills the quality columns
    score  (actors) `ScoreBatch`: ASR model loaded once; transcribe, score, `decide`
    encode (actors) `EncodeKept`: codec for the assistant turns of kept dialogues
    write           `FilterSink`: kept/ and rejects/

`pipelines/filter.py` runs them on Ray; `tokenization.engine.local_run.run_local` runs them in one process (tests, benchmark).
Items carry a `DialogueRow` (dialogues) or a `ScoredTTSRow` (TTS; a token-row dict until loaded) in
`item.row`; TTS items carry their samples in `item.audio` as `(samples, rate)`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filtering.asr import SAMPLE_RATE, AsrBackend, load_asr
from filtering.quality import QualityScorer
from filtering.rules import Rules, decide, prejudge, reason_code
from filtering.wer import score
from tokenization import storage
from tokenization.audio import BadAudio, read_ref, resample
from tokenization.codec import SpeechCodec
from tokenization.codec_factory import load_codec
from tokenization.dialogue_schema import (ASSISTANT, DIALOGUE, TTS, DialogueRow, DialogueTurn, ScoredTTSRow, dialogue_rows_to_table,
                                          flac_to_pcm, pcm_to_flac)
from tokenization.engine.jobs import Item, JobSpec, Step
from tokenization.engine.output_folder import shard_unit
from tokenization.fingerprint import fingerprint
from tokenization.schema import KEPT, N_CODEBOOKS, REJECTS, rows_to_table, sha1_hex
from tokenization.splits import SplitConfig, assign_split
from tokenization.readers.dialogue import read_dialogue_unit
from tokenization.readers.registry import read_unit
from tokenization.units import AudioRef, DialogueSpec, ReaderOptions, Unit


def load_dialogue(spec: DialogueSpec, run_id: str, max_seconds: float | None, split: SplitConfig = SplitConfig()) -> DialogueRow:
    """Read and validate every turn's audio (a file, a span of one, or embedded bytes/samples); FLAC-encode
    it at its own rate. Raises BadAudio.

    The row's `split` comes from the dialogue's speaker hash (its id when it has no speaker).
    """
    turns, digests = [], []
    for t in spec.turns:
        samples, rate = read_ref(t.audio, max_seconds)
        digests.append(sha1_hex(samples.astype(np.float32).tobytes()))
        turns.append(DialogueTurn(t.role, t.text, pcm_to_flac(samples, rate), rate, len(samples) / rate))
    return DialogueRow(spec.dialogue_id, spec.source, spec.language, spec.speaker, turns,
                       audio_sha1=sha1_hex("".join(digests).encode()), run_id=run_id,
                       split=assign_split(spec.speaker, spec.dialogue_id, split))


def dialogue_id(spec: DialogueSpec) -> str:
    return spec.dialogue_id


def load_dialogue_item(item: Item, run_id: str, max_seconds: float | None = None, split: dict | None = None) -> None:
    """Task step: `item.row` (a DialogueSpec) -> a DialogueRow with every turn's audio. Raises BadAudio."""
    spec: DialogueSpec = item.row
    try:
        item.row = load_dialogue(spec, run_id, max_seconds, SplitConfig(**(split or {})))
    except BadAudio as exc:
        item.file = str(exc).split(": ", 1)[0]
        raise


# --- TTS mode: token shards of a tokenize run, joined with their source audio ------------------------

_AUDIO_INDEX: dict[tuple, dict[str, AudioRef]] = {}
_INDEX_LOCK = threading.Lock()


def audio_refs(units: tuple[Unit, ...], opts: ReaderOptions, ids: set[str] | None = None) -> dict[str, AudioRef]:
    """utt_id -> AudioRef (the first occurrence) read from `units`; with `ids`, only those, stopping
    once all are found: memory follows one token shard, not the corpus (a tar's or a Parquet row
    group's embedded audio is kept only for the shard's own rows)."""
    found: dict[str, AudioRef] = {}
    for unit in units:
        for rec in read_unit(unit, opts):
            if hasattr(rec, "audio") and (ids is None or rec.utt_id in ids):
                found.setdefault(rec.utt_id, rec.audio)
                if ids is not None and len(found) == len(ids):
                    return found
    return found


def audio_index(units: tuple[Unit, ...], opts: ReaderOptions) -> dict[str, AudioRef]:
    """All of `audio_refs(units)`, built once per worker process (never on the driver); the fallback
    of `read_token_rows` when a shard's own unit does not hold its audio."""
    key = (units, repr(opts.to_dict()))
    with _INDEX_LOCK:
        if key not in _AUDIO_INDEX:
            _AUDIO_INDEX[key] = audio_refs(units, opts)
        return _AUDIO_INDEX[key]


def read_token_rows(unit: Unit, audio_units: tuple[Unit, ...] = (), opts: ReaderOptions | None = None, split: dict | None = None):
    """Task side: the token rows of one token-shard file (codes included), each with its source audio ref.

    A shard `shard-KEY-KKK` was tokenized from the input unit keyed KEY (`Unit.key`: its path under the
    input root and its range, so it holds across incremental runs): listed the same way, `--audio-manifest`'s
    unit KEY holds its audio, and only that unit is read. When it does not hold every row's audio (the
    units were listed differently), the whole manifest's index is built once per worker instead."""
    opts = opts or ReaderOptions()
    cfg = SplitConfig(**(split or {}))
    with storage.open_input(unit.uri) as fh:
        rows = pq.read_table(fh).to_pylist()
    ids = {r["utt_id"] for r in rows}
    source = next((a for a in audio_units if a.key == shard_unit(unit.uri)), None)
    refs = audio_refs((source,), opts, ids) if source is not None else {}
    if len(refs) < len(ids):
        refs = audio_index(tuple(audio_units), opts)
    for r in rows:
        r["split"] = r.get("split") or assign_split(r["speaker"], r["utt_id"], cfg)  # shards written before splits
        r["_audio"] = refs.get(r["utt_id"])
        yield r


def token_row_id(row: dict) -> str:
    return row["utt_id"]


def load_tts_item(item: Item, max_seconds: float | None = None) -> None:
    """Task step: the token row (a dict) -> a `ScoredTTSRow`, its source audio in `item.audio`. Raises BadAudio."""
    ref = item.row.pop("_audio", None)
    if ref is None:
        raise BadAudio(f"{item.id}: no source audio for this utterance in --audio-manifest")
    item.file = ref.name
    item.audio = read_ref(ref, max_seconds)
    item.row = ScoredTTSRow.from_dict(item.row)
    if item.row.audio_fp is None:  # token shards before schema 4: the fingerprint dedup reads, from the audio held here
        item.row.audio_fp = fingerprint(*item.audio)


def scored_clips(items: list[Item], rules: Rules) -> list[tuple[Item, object, str, str, np.ndarray]]:
    """(item, target turn/row, text, language, 16 kHz samples) for every clip a batch must score: the turns of
    `rules.score_roles` (dialogues not rejected on text alone) or the TTS row itself."""
    clips = []
    for item in items:
        if item.status != "ok":
            continue
        row = item.row
        if isinstance(row, DialogueRow):
            if prejudge({"turns": [{"role": t.role, "text": t.text} for t in row.turns]}, rules):
                continue  # rejected on text/roles alone (decide names why): no model spent on it
            for t in row.turns:
                if t.role in rules.score_roles:
                    samples, rate = flac_to_pcm(t.audio_flac)
                    clips.append((item, t, t.text, row.language, resample(samples, rate, SAMPLE_RATE)))
        else:
            samples, rate = item.audio
            clips.append((item, row, row.text, row.language or "en", resample(samples, rate, SAMPLE_RATE)))
    return clips


class QualityBatch:
    """Actor step (`--quality`): DNSMOS and/or Silero VAD loaded once; fills the quality columns
    (`filtering.quality.QUALITY_COLUMNS`) of every clip the ASR step will judge. Runs before `ScoreBatch`,
    whose `decide` reads them.

    Args:
        scorers: names from `filtering.quality.SCORERS`, or a loaded `QualityScorer` (tests, benchmark).
        rules: which turns are scored (`score_roles`); a `Rules` or its dict.
        threads: onnxruntime threads per actor (its CPUs).
    """

    def __init__(self, scorers: tuple[str, ...] | QualityScorer, rules: Rules | dict, device: str = "cpu", threads: int = 1):
        self.scorer = scorers if isinstance(scorers, QualityScorer) else QualityScorer(scorers, device, threads)
        self.rules = rules if isinstance(rules, Rules) else Rules.from_dict(rules)

    def __call__(self, items: list[Item]) -> list[Item]:
        clips = scored_clips(items, self.rules)
        for (_, target, _, _, _), values in zip(clips, self.scorer.score([c[4] for c in clips])):
            for k, v in values.items():  # target: a DialogueTurn or a ScoredTTSRow, both `QualityScore`s
                setattr(target, k, v)
        return items


class ScoreBatch:
    """Actor step: ASR model loaded once; transcribes, scores and judges every ok item of a batch.

    Args:
        asr: a backend spec for `load_asr` or a loaded `AsrBackend` (tests, benchmark).
        rules: keep/reject thresholds (a `Rules` or its dict).
    """

    def __init__(self, asr: str | AsrBackend, rules: Rules | dict, device: str = "cpu", batch_size: int = 8):
        self.asr = load_asr(asr, device=device, batch_size=batch_size) if isinstance(asr, str) else asr
        self.rules = rules if isinstance(rules, Rules) else Rules.from_dict(rules)

    def __call__(self, items: list[Item]) -> list[Item]:
        return self.score(items)

    def score(self, items: list[Item]) -> list[Item]:
        clips = scored_clips(items, self.rules)
        hyps = self.asr.transcribe([c[4] for c in clips]) if clips else []
        for (item, target, text, lang, _), hyp in zip(clips, hyps):
            s = score(text, hyp, lang)
            values = {"asr_hyp": hyp, "asr_model": self.asr.name, "text_ref_norm": s.text_ref_norm, "wer": s.wer,
                      "cer": s.cer, "n_ref_words": s.n_ref_words, "n_sub": s.n_sub, "n_del": s.n_del, "n_ins": s.n_ins}
            for k, v in values.items():  # target: a DialogueTurn or a ScoredTTSRow, both `AsrScore`s
                setattr(target, k, v)
        for item in items:
            if item.status != "ok":
                continue
            row = item.row
            if isinstance(row, DialogueRow):
                row.aggregate()
                row.keep, row.reject_reason = decide({"turns": [t.to_dict() for t in row.turns]}, self.rules)
            else:
                row.keep, row.reject_reason = decide(vars(row), self.rules)  # vars: the fields, codes not copied
                item.audio = None  # not written; do not ship it to the writer
        return items


class EncodeKept:
    """Actor step: the codec loaded once; encodes the assistant turns of kept dialogues.

    Rejected dialogues keep `codes` null (n_frames 0): training never reads them, and the
    codec is the expensive part of the job.
    """

    def __init__(self, codec: str | SpeechCodec, device: str = "cpu", n_codebooks: int = N_CODEBOOKS):
        self.codec = load_codec(codec, device=device, n_codebooks=n_codebooks) if isinstance(codec, str) else codec

    def __call__(self, items: list[Item]) -> list[Item]:
        return self.encode(items)

    def encode(self, items: list[Item]) -> list[Item]:
        turns = [t for i in items if i.status == "ok" and isinstance(i.row, DialogueRow) and i.row.keep
                 for t in i.row.turns if t.role == ASSISTANT]
        if not turns:
            return items
        waves = []
        for t in turns:
            samples, rate = flac_to_pcm(t.audio_flac)
            waves.append(resample(samples, rate, self.codec.sample_rate))
        for t, codes in zip(turns, self.codec.encode(waves)):
            t.codes, t.n_frames = np.asarray(codes, np.uint16), int(len(codes))
        return items


@dataclass
class FilterSink:
    """Scored rows -> `kept/` or `rejects/`; `kind` is "dialogue" (`DialogueRow`) or "tts" (`ScoredTTSRow`).

    Everything else (quarantine table, progress marks, `_run.json`, `_manifest.json` with
    in = kept + rejected + quarantined) is the engine's (`tokenization/engine/`):

        kept/shard-KEY-000.parquet      rows with keep = true (dialogue or scored-TTS schema); absent when none
        rejects/shard-KEY-000.parquet   rows with keep = false, same columns, `reject_reason` set; absent when none
    """

    kind: str = DIALOGUE
    n_codebooks: int = N_CODEBOOKS
    tables: tuple[str, ...] = (KEPT, REJECTS)

    def route(self, row: DialogueRow | ScoredTTSRow) -> str:
        return KEPT if row.keep else REJECTS

    def seconds(self, row: DialogueRow | ScoredTTSRow) -> float:
        if isinstance(row, DialogueRow):
            return float(sum(t.duration_s for t in row.turns))
        return float(row.duration_s or 0.0)

    def reject_code(self, row: DialogueRow | ScoredTTSRow) -> str | None:
        return None if row.keep else reason_code(row.reject_reason)

    def table(self, rows: list, sub: str) -> pa.Table:
        if self.kind == DIALOGUE:
            return dialogue_rows_to_table(rows, self.n_codebooks)
        return rows_to_table(rows, self.n_codebooks, ScoredTTSRow)


def filter_job(kind: str, opts: ReaderOptions, run_id: str, *, asr: str | AsrBackend, rules: Rules, codec: str | SpeechCodec,
               max_seconds: float | None, split: SplitConfig = SplitConfig(), rows_per_shard: int = 2000,
               batch_size: int = 8, device: str = "cpu", n_codebooks: int = N_CODEBOOKS, asr_actors: int = 1, asr_cpus: float = 1.0,
               codec_actors: int = 1, codec_cpus: float = 0.25, gpus: float = 0.0,
               audio_units: tuple[Unit, ...] = (), quality: tuple[str, ...] | QualityScorer = (),
               quality_actors: int = 1, quality_cpus: float = 1.0) -> JobSpec:
    """The filter job for the engine.

    Args:
        kind: "dialogue" (units are dialogue manifests) or "tts" (units are token-shard files of a tokenize run,
            joined with the audio of `audio_units`, the tokenize job's input units).
        quality: `--quality` scorers (or a loaded `QualityScorer`); empty: no quality step.
    """
    score_step = Step("score", partial(ScoreBatch, asr, rules.to_dict(), device, batch_size), cpus=asr_cpus, gpus=gpus,
                      actors=asr_actors)
    steps = [score_step]
    if quality:
        threads = max(1, int(quality_cpus))
        steps.insert(0, Step("quality", partial(QualityBatch, quality, rules.to_dict(), device, threads), cpus=quality_cpus,
                             gpus=gpus, actors=quality_actors))
    if kind == DIALOGUE:
        encode = Step("encode", partial(EncodeKept, codec, device, n_codebooks), cpus=codec_cpus, gpus=gpus, actors=codec_actors)
        return JobSpec("filter", partial(read_dialogue_unit, opts=opts), dialogue_id,
                       partial(load_dialogue_item, run_id=run_id, max_seconds=max_seconds, split=split.to_dict()),
                       FilterSink(DIALOGUE, n_codebooks), [*steps, encode], rows_per_shard, batch_size)
    read = partial(read_token_rows, audio_units=tuple(audio_units), opts=opts, split=split.to_dict())
    return JobSpec("filter", read, token_row_id, partial(load_tts_item, max_seconds=max_seconds),
                   FilterSink(TTS, n_codebooks), steps, rows_per_shard, batch_size)
