"""The filter job's processing steps: plain callables on lists of records, no Ray imports.

`pipelines/filter.py` wires them into Ray Data exactly like the tokenization job
(`tokenization/steps.py`): load tasks -> ASR actor pool (model loaded once per actor) ->
codec actor pool (assistant turns of kept dialogues) -> one shard writer. Unit tests and the
benchmark call them directly.

A record is one input row on its way through the job:
    {"shard", "pos", "status": "ok"|"quarantine", "stage", "reason", "file",
     "row": DialogueRow (dialogues) | dict of token-row columns (TTS shards),
     "audio_flac": bytes (TTS shards only, not written out)}
Between Ray stages a planned batch travels as one row whose `payload` is the pickled record
list, so nested turns never go through Ray's schema inference.
"""

from __future__ import annotations

import json
import pickle

import numpy as np

from filtering.asr import SAMPLE_RATE, AsrBackend, load_asr
from filtering.dialogue_manifest import DialogueSpec
from filtering.dialogue_schema import DialogueRow, DialogueTurn, flac_to_pcm, pcm_to_flac
from filtering.rules import Rules, decide, prejudge
from filtering.wer import score
from tokenization.audio import BadAudio, read_ref, read_validated, resample
from tokenization.codec import SpeechCodec, load_codec
from tokenization.schema import sha1_hex
from tokenization.splits import SplitConfig, assign_split

ASR_COLUMNS = ("asr_hyp", "asr_model", "text_ref_norm", "wer", "cer", "n_ref_words", "n_sub", "n_del", "n_ins")


def pack(records: list[dict]) -> bytes:
    return pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> list[dict]:
    return pickle.loads(payload)


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


def load_dialogue_batch(item: dict, run_id: str, max_seconds: float | None = None, split: dict | None = None) -> dict:
    """Task step: one planned batch of dialogue specs (JSON) -> records (pickled `payload`)."""
    split_cfg = SplitConfig(**(split or {}))
    records = []
    for offset, d in enumerate(json.loads(item["entries"])):
        spec = DialogueSpec.from_dict(d)
        rec = {"shard": item["shard"], "pos": item["first_pos"] + offset, "status": "ok", "stage": "", "reason": "", "file": ""}
        try:
            rec["row"] = load_dialogue(spec, run_id, max_seconds, split_cfg)
        except BadAudio as exc:
            rec.update(status="quarantine", stage="load", reason=str(exc), file=str(exc).split(": ", 1)[0],
                       row={"dialogue_id": spec.dialogue_id})
        records.append(rec)
    return {"shard": item["shard"], "batch": item["batch"], "payload": pack(records)}


def load_tts_batch(item: dict, max_seconds: float | None = None) -> dict:
    """Task step for TTS-shard filtering: entries are token rows + `audio_path` of their source audio."""
    records = []
    for offset, row in enumerate(pickle.loads(item["entries"])):
        rec = {"shard": item["shard"], "pos": item["first_pos"] + offset, "status": "ok", "stage": "", "reason": "",
               "file": row.get("audio_path") or ""}
        path = row.pop("audio_path", None)
        try:
            if not path:
                raise BadAudio(f"{row['utt_id']}: no source audio for this utterance in --audio-manifest")
            samples, rate = read_validated(path, max_seconds)
            rec["audio_flac"] = pcm_to_flac(samples, rate)
        except BadAudio as exc:
            rec.update(status="quarantine", stage="load", reason=str(exc))
        rec["row"] = row
        records.append(rec)
    return {"shard": item["shard"], "batch": item["batch"], "payload": pack(records)}


class ScoreBatch:
    """Actor step: ASR model loaded once; transcribes, scores and judges every record of a batch.

    Args:
        asr: a backend spec for `load_asr` or a loaded `AsrBackend` (tests, benchmark).
        rules: keep/reject thresholds (a `Rules` or its dict).
    """

    def __init__(self, asr: str | AsrBackend, rules: Rules | dict, device: str = "cpu", batch_size: int = 8):
        self.asr = load_asr(asr, device=device, batch_size=batch_size) if isinstance(asr, str) else asr
        self.rules = rules if isinstance(rules, Rules) else Rules.from_dict(rules)

    def __call__(self, batch: dict) -> dict:
        """Ray adapter form: {"payload": [bytes]} -> same with scored records."""
        return {**batch, "payload": [pack(self.score(unpack(p))) for p in batch["payload"]]}

    def _clips(self, records: list[dict]) -> list[tuple[dict, dict, str, str]]:
        """(record, target dict/turn, text, language) for every clip this batch must transcribe."""
        clips = []
        for rec in records:
            if rec["status"] != "ok":
                continue
            row = rec["row"]
            if isinstance(row, DialogueRow):
                if prejudge({"turns": [{"role": t.role, "text": t.text} for t in row.turns]}, self.rules):
                    continue  # rejected on text/roles alone (decide names why): no ASR spent on it
                clips += [(rec, t, t.text, row.language) for t in row.turns if t.role in self.rules.score_roles]
            else:
                clips.append((rec, row, row["text"], row.get("language") or "en"))
        return clips

    def score(self, records: list[dict]) -> list[dict]:
        clips = self._clips(records)
        audios = []
        for rec, target, _, _ in clips:
            samples, rate = flac_to_pcm(target.audio_flac if isinstance(target, DialogueTurn) else rec["audio_flac"])
            audios.append(resample(samples, rate, SAMPLE_RATE))
        hyps = self.asr.transcribe(audios) if audios else []
        for (rec, target, text, lang), hyp in zip(clips, hyps):
            s = score(text, hyp, lang)
            values = {"asr_hyp": hyp, "asr_model": self.asr.name, "text_ref_norm": s.text_ref_norm, "wer": s.wer,
                      "cer": s.cer, "n_ref_words": s.n_ref_words, "n_sub": s.n_sub, "n_del": s.n_del, "n_ins": s.n_ins}
            if isinstance(target, DialogueTurn):
                for k, v in values.items():
                    setattr(target, k, v)
            else:
                target.update(values)
        for rec in records:
            if rec["status"] != "ok":
                continue
            row = rec["row"]
            if isinstance(row, DialogueRow):
                row.aggregate()
                row.keep, row.reject_reason = decide({"turns": [t.to_dict() for t in row.turns]}, self.rules)
            else:
                row["keep"], row["reject_reason"] = decide(row, self.rules)
        return records


class EncodeKept:
    """Actor step: the codec loaded once; encodes the assistant turns of kept dialogues.

    Rejected dialogues keep `codes` null (n_frames 0): training never reads them, and the
    codec is the expensive part of the job.
    """

    def __init__(self, codec: str | SpeechCodec, device: str = "cpu", n_codebooks: int = 8):
        self.codec = load_codec(codec, device=device, n_codebooks=n_codebooks) if isinstance(codec, str) else codec

    def __call__(self, batch: dict) -> dict:
        return {**batch, "payload": [pack(self.encode(unpack(p))) for p in batch["payload"]]}

    def encode(self, records: list[dict]) -> list[dict]:
        turns = [t for r in records if r["status"] == "ok" and isinstance(r["row"], DialogueRow) and r["row"].keep
                 for t in r["row"].turns if t.role == "assistant"]
        if not turns:
            return records
        waves = []
        for t in turns:
            samples, rate = flac_to_pcm(t.audio_flac)
            waves.append(resample(samples, rate, self.codec.sample_rate))
        for t, codes in zip(turns, self.codec.encode(waves)):
            t.codes, t.n_frames = np.asarray(codes, np.uint16), int(len(codes))
        return records
