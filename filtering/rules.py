"""Keep/reject rules: a config dataclass and a pure `decide(row, rules)`.

A row is a dialogue row (its scored turns under `turns`) or a flat TTS-shard row (scored
at top level). Each rule names itself in `reject_reason` as `code: detail`, so the audit
groups by the code before the colon:

    wer | cer | too_short | too_long | empty_hypothesis | speaking_rate | no_scored_turn
    no_user_turn | text_too_long | lead_silence | trail_silence | speech_ratio | dnsmos

The audio-quality rules (`--quality dnsmos,vad`, `filtering/quality.py`) are judged right after the
duration bounds and before the ASR rules: noise or dead air is what is wrong with such a clip, whatever
Whisper made of it. A quality rule on a score the run does not compute is a config error
(`check_quality`, on the driver).

`prejudge` holds the rules that need no audio; the ASR step applies them first, so a dialogue
that could never train, or a transcript no speech could match, costs no ASR.

    >>> decide({"turns": [{"role": "assistant", "wer": 0.5, "cer": 0.3, "duration_s": 2.0,
    ...                    "n_ref_words": 6, "n_del": 3, "n_ins": 0}]}, Rules())
    (False, 'wer: 0.500 > 0.100 (turn 0)')
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from filtering.quality import DNSMOS, VAD
from tokenization.dialogue_schema import ASSISTANT, USER
from tokenization.strict_config import load_dataclass

REASONS = ("no_user_turn", "text_too_long", "no_scored_turn", "too_short", "too_long", "lead_silence", "trail_silence",
           "speech_ratio", "dnsmos", "empty_hypothesis", "wer", "cer", "speaking_rate")
# quality rule -> (the column it reads, the scorer that fills it, "min" | "max")
QUALITY_RULES = {"min_dnsmos_ovrl": ("dnsmos_ovrl", DNSMOS, "min"), "min_dnsmos_sig": ("dnsmos_sig", DNSMOS, "min"),
                 "min_dnsmos_bak": ("dnsmos_bak", DNSMOS, "min"), "min_speech_ratio": ("speech_ratio", VAD, "min"),
                 "max_lead_silence_s": ("lead_silence_s", VAD, "max"), "max_trail_silence_s": ("trail_silence_s", VAD, "max")}


@dataclass(frozen=True)
class Rules:
    """Thresholds; `None` switches a rule off. Speaking rate is reference words per second of audio."""

    max_wer: float | None = 0.10
    max_cer: float | None = None
    min_duration_s: float | None = 0.3
    max_duration_s: float | None = 30.0
    reject_empty_hypothesis: bool = True
    min_words_per_s: float | None = 0.5
    max_words_per_s: float | None = 6.0
    score_roles: tuple[str, ...] = (ASSISTANT,)  # which dialogue turns are transcribed and judged
    require_user_turn: bool = True  # stage 3 trains on user -> assistant exchanges; none means nothing to learn
    max_text_chars: int | None = 4000  # per transcript; ~10 min of speech, far beyond any clip we keep
    # Audio quality (need `--quality dnsmos` / `--quality vad`): DNSMOS MOS 1-5, VAD speech share, silences in s.
    min_dnsmos_ovrl: float | None = None
    min_dnsmos_sig: float | None = None
    min_dnsmos_bak: float | None = None
    min_speech_ratio: float | None = None
    max_lead_silence_s: float | None = None
    max_trail_silence_s: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score_roles"] = list(self.score_roles)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "rules") -> "Rules":
        """Strictly (`tokenization.strict_config`): an unknown or mistyped rule names itself and `where`."""
        return load_dataclass(cls, d, where=where, noun="rule")

    def check_quality(self, scorers: tuple[str, ...]) -> None:
        """Raise ValueError naming the first quality rule whose score a run with `scorers` does not compute."""
        for name, (_, scorer, _) in QUALITY_RULES.items():
            if getattr(self, name) is not None and scorer not in scorers:
                raise ValueError(f"rule {name}: needs --quality {scorer} (this run scores: {','.join(scorers) or 'no quality'})")

    @classmethod
    def load(cls, path: str | Path) -> "Rules":
        """From a JSON or YAML file holding a mapping of the fields above."""
        text = Path(path).read_text("utf-8")
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            return cls.from_dict(yaml.safe_load(text) or {}, where=str(path))
        return cls.from_dict(json.loads(text), where=str(path))


def _judge(t: dict, r: Rules, where: str) -> str:
    dur, n_ref = float(t["duration_s"]), int(t["n_ref_words"])
    if r.min_duration_s is not None and dur < r.min_duration_s:
        return f"too_short: {dur:.2f} s < {r.min_duration_s:g} s{where}"
    if r.max_duration_s is not None and dur > r.max_duration_s:
        return f"too_long: {dur:.2f} s > {r.max_duration_s:g} s{where}"
    reason = _judge_quality(t, r, where)
    if reason:
        return reason
    n_hyp = n_ref - int(t["n_del"]) + int(t["n_ins"])  # hits + subs + ins
    if r.reject_empty_hypothesis and n_hyp == 0 and n_ref > 0:
        return f"empty_hypothesis: ASR heard no words{where}"
    if r.max_wer is not None and t["wer"] > r.max_wer:
        return f"wer: {t['wer']:.3f} > {r.max_wer:.3f}{where}"
    if r.max_cer is not None and t["cer"] > r.max_cer:
        return f"cer: {t['cer']:.3f} > {r.max_cer:.3f}{where}"
    rate = n_ref / dur if dur > 0 else float("inf")
    if r.min_words_per_s is not None and rate < r.min_words_per_s:
        return f"speaking_rate: {rate:.2f} words/s < {r.min_words_per_s:g}{where}"
    if r.max_words_per_s is not None and rate > r.max_words_per_s:
        return f"speaking_rate: {rate:.2f} words/s > {r.max_words_per_s:g}{where}"
    return ""


def _judge_quality(t: dict, r: Rules, where: str) -> str:
    """Silences, then speech share, then DNSMOS ("" if none fails); a score that is null (no speech found) passes
    its own rule: no speech at all is `speech_ratio`'s to judge."""
    lead, trail, ratio = t.get("lead_silence_s"), t.get("trail_silence_s"), t.get("speech_ratio")
    if r.max_lead_silence_s is not None and lead is not None and lead > r.max_lead_silence_s:
        return f"lead_silence: {lead:.2f} s > {r.max_lead_silence_s:g} s{where}"
    if r.max_trail_silence_s is not None and trail is not None and trail > r.max_trail_silence_s:
        return f"trail_silence: {trail:.2f} s > {r.max_trail_silence_s:g} s{where}"
    if r.min_speech_ratio is not None and ratio is not None and ratio < r.min_speech_ratio:
        return f"speech_ratio: {ratio:.2f} < {r.min_speech_ratio:g}{where}"
    for part in ("ovrl", "sig", "bak"):
        limit, value = getattr(r, f"min_dnsmos_{part}"), t.get(f"dnsmos_{part}")
        if limit is not None and value is not None and value < limit:
            return f"dnsmos: {part} {value:.2f} < {limit:g}{where}"
    return ""


def prejudge(row: dict, rules: Rules) -> str:
    """The reject reason from text and roles alone ("" if none): checked before ASR runs.

    Args:
        row: a dialogue row with `turns` (each with `role` and `text`) or a flat row with `text`.
    """
    turns = row["turns"] if "turns" in row else [row]
    where = (lambda i: f" (turn {i})") if "turns" in row else (lambda i: "")
    if rules.max_text_chars is not None:
        for i, t in enumerate(turns):
            n = len(t.get("text") or "")
            if n > rules.max_text_chars:
                return f"text_too_long: {n} chars > {rules.max_text_chars}{where(i)}"
    if "turns" in row and rules.require_user_turn and not any(t.get("role") == USER for t in turns):
        return f"no_user_turn: roles {sorted({str(t.get('role')) for t in turns})}, no user turn to answer"
    return ""


def decide(row: dict, rules: Rules) -> tuple[bool, str]:
    """(keep, reject_reason) for one scored row; the first failing rule of the first failing turn wins.

    Args:
        row: a dialogue row with `turns` (each scored turn has `wer`, `cer`, `duration_s`,
            `n_ref_words`, `n_del`, `n_ins`; unscored turns have `wer` None) or a flat TTS row.
    Returns:
        (True, "") or (False, "code: detail").
    """
    reason = prejudge(row, rules)
    if reason:
        return False, reason
    if "turns" not in row:
        reason = _judge(row, rules, "")
        return reason == "", reason
    scored = [(i, t) for i, t in enumerate(row["turns"]) if t.get("wer") is not None]
    if not scored:
        return False, f"no_scored_turn: no turn of a scored role {list(rules.score_roles)}"
    for i, t in scored:
        reason = _judge(t, rules, f" (turn {i})")
        if reason:
            return False, reason
    return True, ""


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()
