"""Audio players for the report's example rows: hear why a row was rejected or flagged.

A WER number does not say whether the TTS voice mumbled, the ASR misheard or the transcript
is wrong; the clip does. For the example rows the report shows (rejects per reason, the
worst kept rows, lint examples) each turn gets its audio as an Ogg/Opus data URI, so the page
stays one self-contained file:

    user turn               the shard's FLAC bytes
    assistant / TTS clip    its source file when reachable (`audio_manifest`), else the shard's
                            FLAC bytes, else decoded from its codes with the run's codec (`codec`)

At most `max_examples` rows and `max_bytes` of audio in all; the report says when a cap was hit.

    >>> part, uris = listen_examples(kind, pick_examples(groups, by_id), ListenOptions(codec="tiny"))
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from filtering.asr import SAMPLE_RATE
from filtering.audit.read import RowFact, fetch_rows
from filtering.audit.stats import diff_ops
from filtering.normalize import normalize
from tokenization.audio import read_ref, resample
from tokenization.dialogue_schema import FILTER_DIALOGUE, TTS, USER, flac_to_pcm
from tokenization.readers.registry import list_units, read_unit
from tokenization.schema import QuarantineRow, codes_to_numpy
from tokenization.units import AudioRef, ReaderOptions

CLIP_RATE = SAMPLE_RATE  # what the ASR heard (16 kHz; Opus takes 8/12/16/24/48 kHz)
MIME = "audio/ogg"


@dataclass
class ListenOptions:
    """How the report embeds audio. `codec`: `tiny` or a checkpoint path, as the filter took it."""

    codec: str | None = None
    max_examples: int = 20
    max_bytes: int = 8 * 2**20
    audio_manifest: str | None = None


def encode_clip(samples: np.ndarray, rate: int) -> bytes:
    """Mono float32 [S] -> Ogg/Opus bytes at 16 kHz (about 6x smaller than FLAC for speech)."""
    buf = io.BytesIO()
    x = np.clip(resample(np.asarray(samples, np.float32), rate, CLIP_RATE), -1.0, 1.0)
    sf.write(buf, x, CLIP_RATE, format="OGG", subtype="OPUS")
    return buf.getvalue()


def example_groups(figures: dict, lint_checks: list[dict], worst_kept: list[str], lowest_dnsmos: list[str]) -> list[tuple[str, list[str]]]:
    """(group label, row ids) of every row worth playing: rejects per reason, worst kept rows, lowest-DNSMOS kept
    rows, lint examples."""
    groups: list[tuple[str, list[str]]] = []
    for code, exs in figures["rejections"]["examples"].items():
        groups.append((f"rejected: {code}", [e["id"] for e in exs]))
    groups.append(("worst kept", worst_kept))
    groups.append(("lowest DNSMOS kept", lowest_dnsmos))
    for c in lint_checks:
        if not c["passed"]:
            ids = [e.get("id") or (e.get("ids") or [None])[0] or (e.get("train") or [None])[0] for e in c["examples"]]
            groups.append((f"lint: {c['name']}", [str(i).split("#")[0] for i in ids if i]))
    return groups


def pick_examples(groups: list[tuple[str, list[str]]], by_id: dict[str, RowFact]) -> list[tuple[str, RowFact]]:
    """(group label, row) in play order: the groups taken in turn, so the first N heard cover every group;
    `by_id`: the rows found (with path and index)."""
    picked: list[tuple[str, RowFact]] = []
    seen: set[str] = set()
    depth = max((len(ids) for _, ids in groups), default=0)
    for k in range(depth):  # round robin, so every group gets heard before the cap
        for label, ids in groups:
            if k < len(ids) and ids[k] in by_id and ids[k] not in seen:
                seen.add(ids[k])
                picked.append((label, by_id[ids[k]]))
    return picked


def _source_refs(kind: str, manifest: str | None, ids: set[str]) -> dict[str, list[AudioRef]]:
    """{row id: source audio per clip} of the rows in `ids`, from the run's input when given: any layout the
    unit readers know (tars, HF Parquet, cuts, manifests; spans and embedded audio included), read one unit at
    a time and stopping once every id is found; only the picked rows' refs are kept."""
    if not manifest or not ids:
        return {}
    opts = ReaderOptions()
    found: dict[str, list[AudioRef]] = {}
    for unit in list_units(manifest, "dialogue" if kind == FILTER_DIALOGUE else "auto", opts):
        for rec in read_unit(unit, opts):
            rid = getattr(rec, "dialogue_id", None) or getattr(rec, "utt_id", "")
            if rid in ids and rid not in found and not isinstance(rec, QuarantineRow):
                found[rid] = [t.audio for t in rec.turns] if kind == FILTER_DIALOGUE else [rec.audio]
        if len(found) == len(ids):
            break
    return found


class ClipAudio:
    """Turns one clip into samples by the first route that works; remembers why one failed."""

    def __init__(self, opts: ListenOptions, sources: dict[str, list[AudioRef]]):
        self.opts, self.sources, self._codec = opts, sources, None

    def codec(self):
        if self._codec is None:
            from tokenization.codec_factory import load_codec

            self._codec = load_codec(self.opts.codec)
        return self._codec

    def get(self, row_id: str, turn: int, clip: dict) -> tuple[np.ndarray | None, int, str]:
        refs = self.sources.get(row_id, [])
        if clip["role"] != USER and turn < len(refs):
            try:
                samples, rate = read_ref(refs[turn])
                return samples, rate, "source file"
            except (OSError, ValueError):
                pass  # unreachable from here: the shard or the codes still speak
        if clip.get("audio_flac"):
            samples, rate = flac_to_pcm(clip["audio_flac"])
            return samples, rate, "shard FLAC"
        if clip.get("codes"):
            if not self.opts.codec:
                return None, 0, "codes only: pass --codec (tiny or the run's checkpoint) to decode them"
            c = self.codec()
            return c.decode([codes_to_numpy(clip["codes"])])[0], c.sample_rate, f"decoded with codec {c.name}"
        return None, 0, "no audio stored for this clip"


def _clips(kind: str, row: dict) -> list[dict]:
    if kind == FILTER_DIALOGUE:
        return row["turns"]
    return [{**row, "role": TTS}]


def listen_examples(kind: str, candidates: list[tuple[str, RowFact]], opts: ListenOptions) -> tuple[dict, dict[str, str]]:
    """The `listen` part of audit.json and the data URIs keyed `row_id#turn` (kept out of the JSON);
    `candidates` from `pick_examples`, in play order.

    Returns:
        ({"examples": [{"group", "id", "status", "reason", "wer", "clips": [{"turn", "role", "text", "asr_hyp",
          "wer", "diff", "from", "seconds", "bytes"}]}], "n_clips", "bytes", "notes"}, {key: data URI}).
    """
    picked = candidates[: opts.max_examples]
    wanted: dict[str, list[int]] = {}
    for _, f in picked:
        wanted.setdefault(f.path, []).append(f.index)
    rows = fetch_rows(wanted)
    audio = ClipAudio(opts, _source_refs(kind, opts.audio_manifest, {f.id for _, f in picked}))
    uris: dict[str, str] = {}
    total, skipped, examples, notes = 0, 0, [], []
    for label, f in picked:
        row = rows[(f.path, f.index)]
        lang = row.get("language") or "en"
        clips = []
        for j, clip in enumerate(_clips(kind, row)):
            samples, rate, route = audio.get(f.id, j, clip)
            info = {"turn": j, "role": clip["role"], "text": clip.get("text") or "", "asr_hyp": clip.get("asr_hyp"),
                    "wer": None if clip.get("wer") is None else round(float(clip["wer"]), 4),
                    "dnsmos_ovrl": None if clip.get("dnsmos_ovrl") is None else round(float(clip["dnsmos_ovrl"]), 3), "from": route,
                    "seconds": None, "bytes": 0}
            if clip.get("asr_hyp") is not None:
                info["diff"] = diff_ops(clip.get("text_ref_norm") or "", normalize(clip["asr_hyp"], lang))
            if samples is not None and len(samples):
                data = encode_clip(samples, rate)
                if total + len(data) > opts.max_bytes:
                    skipped += 1
                    info["from"] = "not embedded: audio size cap reached"
                else:
                    total += len(data)
                    uris[f"{f.id}#{j}"] = f"data:{MIME};base64,{base64.b64encode(data).decode()}"
                    info.update(seconds=round(len(samples) / rate, 3), bytes=len(data))
            clips.append(info)
        examples.append({"group": label, "id": f.id, "status": f.status, "reason": f.reason,
                         "wer": None if f.wer is None else round(float(f.wer), 4), "clips": clips})
    if skipped:
        notes.append(f"Audio size cap of {opts.max_bytes / 2**20:g} MB reached: {skipped} clips not embedded "
                     "(raise --max-audio-mb).")
    if len(candidates) > len(picked):
        notes.append(f"{len(candidates) - len(picked)} more example rows not played (--max-audio-examples {opts.max_examples}).")
    return {"examples": examples, "n_clips": len(uris), "bytes": total, "notes": notes}, uris
