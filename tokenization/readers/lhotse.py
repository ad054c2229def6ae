"""`--format lhotse`: Lhotse cuts JSONL(.gz) into long recordings (LibriHeavy `MonoCut`s).

Per cut: `id`, `start`, `duration`, audio `recording.sources[0].source` (a relative `file`
source resolves against the cuts file's folder or `--audio-root`, under the folder rule; `url`
sources are taken as given), text `supervisions[0].text` or `supervisions[0].custom.texts[0]`,
speaker `supervisions[0].speaker`. Only the cut's span is decoded (`tokenization.audio.read_span`
seeks); a span past the end of its recording or a missing recording is quarantined there, in
the load step. Plain `.jsonl` files are cut into byte ranges (`--unit-bytes`); `.gz` files are
one unit each.
"""

from __future__ import annotations

from typing import Iterator

from tokenization.paths import OutsidePath, folder_of, resolve_audio_path
from tokenization.readers.base import BadRecord, bad, meta_of, source_name
from tokenization.readers.manifests import span_of
from tokenization.readers.ranges import json_lines, list_ranges
from tokenization.schema import QuarantineRow
from tokenization.units import AudioRef, ReaderOptions, Record, Unit, Utterance

CUTS_SUFFIXES = (".jsonl", ".jsonl.gz")
LANGUAGES = {"english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it", "dutch": "nl",
             "polish": "pl", "portuguese": "pt", "chinese": "zh", "mandarin": "zh", "japanese": "ja", "korean": "ko"}


def _text(sup: dict) -> str:
    text = sup.get("text")
    if not (isinstance(text, str) and text.strip()):
        texts = (sup.get("custom") or {}).get("texts")
        text = texts[0] if isinstance(texts, list) and texts and isinstance(texts[0], str) else ""
    return text.strip()


def cut_to_utterance(cut: dict, where: str, folder: str, source: str, opts: ReaderOptions) -> Utterance:
    """One cut -> Utterance with its span. Raises BadRecord with the reason."""
    if not isinstance(cut, dict):
        raise BadRecord("not a JSON object")
    cut_id = str(cut.get("id") or "").strip()
    if not cut_id:
        raise BadRecord("cut without an id")
    sources = (cut.get("recording") or {}).get("sources") or []
    if not sources or not isinstance(sources[0], dict) or not str(sources[0].get("source") or "").strip():
        raise BadRecord("no recording source")
    kind, where_audio = sources[0].get("type", "file"), str(sources[0]["source"]).strip()
    if kind not in ("file", "url"):
        raise BadRecord(f"recording source type {kind!r} is not supported (file or url)")
    sups = [s for s in cut.get("supervisions") or [] if isinstance(s, dict)]
    text = _text(sups[0]) if sups else ""
    if not text:
        raise BadRecord("no text (supervisions[0].text or supervisions[0].custom.texts[0])")
    if cut.get("duration") in (None, ""):
        raise BadRecord("cut without a duration")
    start, duration = span_of({"offset": cut.get("start") or 0.0, "duration": cut["duration"]})
    try:
        path = where_audio if kind == "url" else resolve_audio_path(folder, where_audio, opts.audio_root, opts.allow_outside_paths)
    except OutsidePath as exc:
        raise BadRecord(str(exc)) from None
    language = str(sups[0].get("language") or "en")
    return Utterance(utt_id=cut_id, text=text, audio=AudioRef(path=path, start_s=start, duration_s=duration),
                     speaker=str(sups[0].get("speaker") or ""), source=source,
                     language=LANGUAGES.get(language.lower(), language), meta=meta_of(cut.get("custom") or {}, set()),
                     where=where)


def list_cuts(uri: str, opts: ReaderOptions) -> list[Unit]:
    return list_ranges(uri, "lhotse", opts, CUTS_SUFFIXES)


def read_cuts(unit: Unit, opts: ReaderOptions) -> Iterator[Record]:
    folder, source, seen = folder_of(unit.uri), source_name(unit.uri, opts), set()
    for where, line, cut in json_lines(unit):
        if isinstance(cut, QuarantineRow):
            yield cut
            continue
        try:
            u = cut_to_utterance(cut, where, folder, source, opts)
        except BadRecord as exc:
            yield bad(unit.uri, where, str(exc), str(cut.get("id") or "") if isinstance(cut, dict) else "", line)
            continue
        if u.utt_id in seen:
            yield bad(unit.uri, where, f"duplicate id {u.utt_id!r}", u.utt_id, line)
            continue
        seen.add(u.utt_id)
        yield u
