"""Dataset lint: checks that catch data which would silently corrupt training or evaluation.

Each check is a small function over the rows a job kept (what training and evaluation read)
and returns a `LintResult`: name, passed, count, up to 5 examples and the fix. `lint(folder)`
runs them all on a tokenize or filter output folder (`filtering.audit.partial.lint`: per-clip checks per
file, the grouping checks by hash part); `pipelines.audit --strict` exits 1 when one fails.

    >>> results = lint("out/filtered", LintConfig(tokenizer="/models/qwen3/tokenizer.json"))
    >>> [r.name for r in results if not r.passed]
    ['duplicate_audio']

Checks: user clips over the Whisper encoder's 30 s window; clips over the Talker's frames;
the same normalized text in train and test; a speaker in two splits; duplicates by
`audio_sha1` and by normalized text; characters the tokenizer cannot encode and round-trip
or outside the language's script; speaking-rate outliers (words/s); `n_frames` that do not
match duration x frame rate.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from filtering.normalize import normalize as _normalize
from tokenization.dialogue_schema import DIALOGUE, TTS, USER, row_kind
from tokenization.schema import ShardCodec

N_EXAMPLES = 5
WHISPER_WINDOW_S = 30.0  # the Whisper encoder sees 30 s of audio (3000 mel frames); the rest is cut off
TALKER_MAX_FRAMES = 511  # VocalNetConfig.tiny().talker: max_frames 512 - 1 end step - max delay 0 (collate.py)

# Unicode name prefixes of the letters each language writes with (unicodedata.name).
SCRIPTS = {
    **{lang: ("LATIN",) for lang in ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "cs", "sv", "da", "no", "fi",
                                      "tr", "ro", "hu", "id", "vi", "ca", "hr", "sk", "sl", "et", "lv", "lt")},
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "bg": ("CYRILLIC",), "el": ("GREEK",), "ar": ("ARABIC",),
    "fa": ("ARABIC",), "he": ("HEBREW",), "hi": ("DEVANAGARI",), "th": ("THAI",), "ko": ("HANGUL",),
    "zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"),
}
NO_SPACES = ("zh", "ja", "th")
# Whisper's English normalizer is most of a scan's CPU; a row's text is normalized for its key and for its
# speaking rate: cached, it is normalized once (a shard's rows fit the cache).
normalize = functools.lru_cache(maxsize=1 << 15)(_normalize)  # no words between spaces: speaking rate in words/s does not apply


@dataclass
class LintConfig:
    """Thresholds of the checks; `tokenizer` (a tokenizer.json path) enables the vocabulary check."""

    max_user_audio_s: float = WHISPER_WINDOW_S
    talker_max_frames: int = TALKER_MAX_FRAMES
    min_words_per_s: float = 0.5
    max_words_per_s: float = 6.0
    min_rate_duration_s: float = 0.5  # clips shorter than this give no meaningful rate
    frames_tolerance: float = 0.1  # |n_frames - duration x frame rate| allowed: max(1 frame, this share)
    tokenizer: str = ""


@dataclass
class LintResult:
    name: str
    passed: bool
    count: int  # offending rows (or clips, or groups: see `unit`)
    checked: int
    unit: str
    examples: list[dict] = field(default_factory=list)
    fix: str = ""
    skipped: str = ""  # why the check could not run (passed stays True)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Row:
    """One kept row (utterance or dialogue) as the checks see it."""

    id: str
    split: str
    speaker: str
    language: str
    text: str  # the utterance's text; a dialogue's turn texts joined by " | "
    audio_sha1: str


@dataclass
class Clip:
    """One piece of audio with its text: an utterance, or one turn of a dialogue."""

    id: str
    role: str  # tts | user | assistant
    language: str
    text: str
    duration_s: float | None
    n_frames: int | None


def _result(name: str, bad: list[dict], checked: int, unit: str, fix: str) -> LintResult:
    return LintResult(name, not bad, len(bad), checked, unit, bad[:N_EXAMPLES], fix)


# ---- checks ---------------------------------------------------------------------------------
def check_user_audio_length(clips: list[Clip], cfg: LintConfig) -> LintResult:
    users = [c for c in clips if c.role == USER]
    bad = [{"id": c.id, "duration_s": round(c.duration_s, 2)} for c in users if (c.duration_s or 0) > cfg.max_user_audio_s]
    return _result("user_audio_over_whisper_window", bad, len(users), "user turns",
                   f"Whisper encodes only the first {cfg.max_user_audio_s:g} s: split or drop longer user turns "
                   "(pipelines.filter --max-duration, or rules max_duration_s) or train with data.max_audio_s.")


def check_talker_frames(clips: list[Clip], cfg: LintConfig) -> LintResult:
    spoken = [c for c in clips if c.role != USER and c.n_frames is not None]
    bad = [{"id": c.id, "n_frames": c.n_frames} for c in spoken if c.n_frames > cfg.talker_max_frames]
    return _result("talker_max_frames", bad, len(spoken), "clips",
                   f"The Talker has {cfg.talker_max_frames} frame positions: longer clips are cut in training. "
                   "Segment them, lower --max-duration, or raise model.talker.max_frames (and data.max_frames).")


def check_text_leakage(rows: list[Row]) -> LintResult:
    by_text: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = normalize(r.text, r.language)
        if key:
            by_text[key][r.split].append(r.id)
    bad = [{"text": t, "train": s["train"][:3], "test": s["test"][:3]} for t, s in sorted(by_text.items()) if s["train"] and s["test"]]
    return _result("text_leakage", bad, len(by_text), "distinct texts in both train and test",
                   "Test texts also in train inflate test scores: drop those rows from train (or test), "
                   "or split by a key that groups them (e.g. a script/prompt id as speaker).")


def check_speaker_leakage(rows: list[Row]) -> LintResult:
    splits: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.speaker:
            splits[r.speaker].add(r.split)
    bad = [{"speaker": s, "splits": sorted(v)} for s, v in sorted(splits.items()) if len(v) > 1]
    return _result("speaker_leakage", bad, len(splits), "speakers in more than one split",
                   "Rows of one speaker must share a split: rerun tokenize/filter (splits come from a speaker hash), "
                   "or do not mix outputs written with different --valid/--test-fraction or --split-salt.")


def _duplicate_groups(keys: list[tuple[str, str]]) -> list[dict]:
    by: dict[str, list[str]] = defaultdict(list)
    for key, rid in keys:
        if key:
            by[key].append(rid)
    return [{"key": k, "ids": ids[:5], "n": len(ids)} for k, ids in sorted(by.items()) if len(ids) > 1]


def check_duplicate_audio(rows: list[Row]) -> LintResult:
    groups = _duplicate_groups([(r.audio_sha1, r.id) for r in rows])
    return _result("duplicate_audio", groups, len(rows), "groups of rows with the same audio_sha1",
                   "Identical audio is trained on twice (and may sit in train and test): keep one row per audio_sha1.")


def check_duplicate_text(rows: list[Row]) -> LintResult:
    groups = _duplicate_groups([(normalize(r.text, r.language), r.id) for r in rows])
    return _result("duplicate_text", groups, len(rows), "groups of rows with the same normalized text",
                   "Repeated transcripts over-weight a few sentences: deduplicate, or cap repeats per text "
                   "(different speakers reading one script on purpose is the exception).")


def check_script(clips: list[Clip]) -> LintResult:
    bad, checked = [], 0
    for c in clips:
        letters = SCRIPTS.get((c.language or "en").split("-")[0].split("_")[0].lower())
        if letters is None:
            continue
        checked += 1
        odd = sorted({ch for ch in c.text or "" if not _char_ok(ch, letters)})
        if odd:
            bad.append({"id": c.id, "chars": [f"U+{ord(ch):04X} {unicodedata.name(ch, '?')}" for ch in odd[:5]], "text": c.text[:80]})
    return _result("script", bad, checked, "clips", "Characters outside the language's script (or invisible controls) "
                   "are noise for the tokenizer and the ASR check: fix the transcript, transliterate, or set `language` right.")


def _char_ok(ch: str, letters: tuple[str, ...]) -> bool:
    """Letters of the script, combining marks, digits, punctuation, symbols and plain spaces pass."""
    cat = unicodedata.category(ch)
    if cat[0] in "PNS" or cat == "Zs" or cat[0] == "M":
        return True
    if cat[0] == "L":
        return unicodedata.name(ch, "").startswith(letters)
    return False  # controls (Cc), format characters such as zero-width spaces (Cf), line breaks, ...


def check_tokenizer(clips: list[Clip], tokenizer_path: str) -> LintResult:
    """Texts whose tokens include unk or special tokens, or that do not decode back to themselves."""
    name = "tokenizer_vocabulary"
    fix = ("The model sees something else than the transcript: replace or drop the characters, "
           "or train with a tokenizer that covers them.")
    if not tokenizer_path:
        return LintResult(name, True, 0, 0, "texts", [], fix, skipped="no --tokenizer given")
    tok = _load_tokenizer(tokenizer_path)
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    special_ids = {tok.token_to_id(t) for t in special} - {None}
    unk = _unk_token(tok)
    texts = sorted({c.text for c in clips if c.text})
    ids_of = {t: e.ids for t, e in zip(texts, tok.encode_batch(texts, add_special_tokens=False))}
    bad_texts = {}
    for text, ids in ids_of.items():
        back = tok.decode(ids, skip_special_tokens=False)
        problems = []
        if unk is not None and unk in ids:
            problems.append("unk token")
        if special_ids & set(ids):
            problems.append("special token: " + ", ".join(sorted({tok.id_to_token(i) for i in set(ids) & special_ids})))
        if back != text:
            problems.append(f"decodes as {back[:60]!r}")
        if problems:
            bad_texts[text] = problems
    bad = [{"id": c.id, "text": c.text[:80], "problems": bad_texts[c.text]} for c in clips if c.text in bad_texts]
    return _result(name, bad, len(texts), "clips", fix)


@functools.lru_cache(maxsize=2)
def _load_tokenizer(path: str):
    """Loaded once per process: the scan checks each file's texts with it."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def _unk_token(tok) -> int | None:
    import json

    model = json.loads(tok.to_str()).get("model", {})
    unk = model.get("unk_token")
    return tok.token_to_id(unk) if isinstance(unk, str) else None


def check_speaking_rate(clips: list[Clip], cfg: LintConfig) -> LintResult:
    bad, checked = [], 0
    for c in clips:
        lang = (c.language or "en").split("-")[0].lower()
        if lang in NO_SPACES or not c.duration_s or c.duration_s < cfg.min_rate_duration_s or not c.text:
            continue
        checked += 1
        rate = len(normalize(c.text, c.language).split()) / c.duration_s
        if not cfg.min_words_per_s <= rate <= cfg.max_words_per_s:
            bad.append({"id": c.id, "words_per_s": round(rate, 2), "duration_s": round(c.duration_s, 2), "text": c.text[:80]})
    return _result("speaking_rate", bad, checked, "clips",
                   f"Outside {cfg.min_words_per_s:g}-{cfg.max_words_per_s:g} words/s the text and audio rarely match "
                   "(wrong transcript, long silence, truncated audio): drop the clip or filter with rules min/max speaking rate.")


def check_frames_per_second(clips: list[Clip], frame_rate: float, cfg: LintConfig) -> LintResult:
    coded = [c for c in clips if c.n_frames and c.duration_s]
    bad = []
    for c in coded:
        expected = c.duration_s * frame_rate
        if abs(c.n_frames - expected) > max(1.0, cfg.frames_tolerance * expected):
            bad.append({"id": c.id, "n_frames": c.n_frames, "expected": round(expected, 2),
                        "frames_per_s": round(c.n_frames / c.duration_s, 2)})
    return _result("frames_per_second", bad, len(coded), "clips",
                   f"n_frames should be duration x {frame_rate:g} Hz (file metadata frame_rate): codes from another "
                   "codec or sample rate, or a wrong duration_s. Re-tokenize with the codec the metadata names.")


# ---- reading --------------------------------------------------------------------------------
@dataclass
class LintCollector:
    """Visitor of the audit's single read (`filtering.audit.read.scan`): rows and clips of the kept tables."""

    rows: list[Row] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)

    def __call__(self, status: str, path: str, table: pa.Table, meta: dict[str, str]) -> None:
        if status != "kept":
            return
        self.meta = self.meta or meta
        names = table.column_names
        split = table.column("split").to_pylist() if "split" in names else ["train"] * table.num_rows
        (_dialogues if row_kind(names) == DIALOGUE else _utterances)(table, split, self.rows, self.clips)

    @property
    def frame_rate(self) -> float:
        return ShardCodec.of(self.meta).frame_rate


def _utterances(table: pa.Table, split: list[str], rows: list[Row], clips: list[Clip]) -> None:
    c = {n: table.column(n).to_pylist() for n in ("utt_id", "speaker", "language", "text", "audio_sha1", "duration_s", "n_frames")}
    for i, uid in enumerate(c["utt_id"]):
        rows.append(Row(uid, split[i] or "train", c["speaker"][i] or "", c["language"][i] or "", c["text"][i] or "", c["audio_sha1"][i] or ""))
        clips.append(Clip(uid, TTS, c["language"][i] or "", c["text"][i] or "", c["duration_s"][i], c["n_frames"][i]))


def _dialogues(table: pa.Table, split: list[str], rows: list[Row], clips: list[Clip]) -> None:
    turns = table.column("turns").combine_chunks()
    flat = turns.flatten()
    t = {n: flat.field(n).to_pylist() for n in ("role", "text", "duration_s", "n_frames")}
    offsets = turns.offsets.to_pylist()
    ids, spk, lang, sha = (table.column(n).to_pylist() for n in ("dialogue_id", "speaker", "language", "audio_sha1"))
    for i, did in enumerate(ids):
        lo, hi = offsets[i], offsets[i + 1]
        rows.append(Row(did, split[i] or "train", spk[i] or "", lang[i] or "", " | ".join(t["text"][j] or "" for j in range(lo, hi)), sha[i] or ""))
        for j in range(lo, hi):
            n_frames = t["n_frames"][j] if t["role"][j] != USER and t["n_frames"][j] else None
            clips.append(Clip(f"{did}#{j - lo}", t["role"][j], lang[i] or "", t["text"][j] or "", t["duration_s"][j], n_frames))
