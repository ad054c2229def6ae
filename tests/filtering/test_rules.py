"""Pure keep/reject rules."""

import json

import pytest

from filtering.asr import SAMPLE_RATE
from filtering.rules import Rules, decide, reason_code
from tokenization.dialogue_schema import ASSISTANT, USER


def turn(**kw):
    t = {"role": ASSISTANT, "wer": 0.0, "cer": 0.0, "duration_s": 2.0, "n_ref_words": 5, "n_del": 0, "n_ins": 0}
    t.update(kw)
    return t


def dialogue(*turns):
    return {"turns": [{"role": USER, "wer": None, "duration_s": 1.0}, *turns]}


@pytest.mark.parametrize(
    "t, code",
    [
        (turn(), ""),
        (turn(wer=0.2), "wer"),
        (turn(duration_s=0.1, n_ref_words=0), "too_short"),
        (turn(duration_s=45.0, n_ref_words=100), "too_long"),
        (turn(wer=1.0, n_del=5), "empty_hypothesis"),  # no hypothesis words: named as such, before WER
        (turn(n_ref_words=40, duration_s=3.0), "speaking_rate"),
        (turn(n_ref_words=1, duration_s=10.0), "speaking_rate"),
    ],
)
def test_each_rule(t, code):
    keep, reason = decide(dialogue(t), Rules())
    assert keep == (code == "")
    assert reason_code(reason) == code


QUALITY = Rules(min_dnsmos_ovrl=2.4, min_dnsmos_sig=3.0, min_dnsmos_bak=2.5, min_speech_ratio=0.3,
                max_lead_silence_s=1.0, max_trail_silence_s=1.0)
GOOD = {"dnsmos_ovrl": 2.8, "dnsmos_sig": 3.3, "dnsmos_bak": 3.5, "dnsmos_p808": 3.4, "speech_ratio": 0.9,
        "lead_silence_s": 0.1, "trail_silence_s": 0.2}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({}, ""),
        ({"dnsmos_ovrl": 1.9}, "dnsmos: ovrl 1.90 < 2.4 (turn 1)"),
        ({"dnsmos_sig": 2.5}, "dnsmos: sig 2.50 < 3 (turn 1)"),
        ({"dnsmos_bak": 1.5}, "dnsmos: bak 1.50 < 2.5 (turn 1)"),
        ({"speech_ratio": 0.1}, "speech_ratio: 0.10 < 0.3 (turn 1)"),
        ({"lead_silence_s": 3.0}, "lead_silence: 3.00 s > 1 s (turn 1)"),
        ({"trail_silence_s": 2.0}, "trail_silence: 2.00 s > 1 s (turn 1)"),
        # no speech at all: the silences are null and pass; speech_ratio names it, before DNSMOS
        ({"speech_ratio": 0.0, "lead_silence_s": None, "trail_silence_s": None, "dnsmos_ovrl": 1.1}, "speech_ratio: 0.00 < 0.3 (turn 1)"),
        # a padded clip fails on its silence before its (lower) speech share, and quality before WER
        ({"lead_silence_s": 3.0, "speech_ratio": 0.2}, "lead_silence: 3.00 s > 1 s (turn 1)"),
        ({"dnsmos_ovrl": 1.9, "wer": 0.5}, "dnsmos: ovrl 1.90 < 2.4 (turn 1)"),
    ],
)
def test_quality_rules(change, reason):
    assert decide(dialogue(turn(**{**GOOD, **change})), QUALITY) == (reason == "", reason)
    assert decide(dialogue(turn(**{**GOOD, **change})), Rules())[0] == ("wer" not in change)  # all off by default


def test_cer_rule_and_switching_rules_off():
    assert decide(dialogue(turn(cer=0.3)), Rules(max_cer=0.2))[1].startswith("cer:")
    assert decide(dialogue(turn(wer=0.9)), Rules(max_wer=None)) == (True, "")


def test_first_failing_turn_is_named_and_unscored_rows_rejected():
    keep, reason = decide(dialogue(turn(), {"role": USER, "wer": None}, turn(wer=0.5)), Rules())
    assert not keep and reason == "wer: 0.500 > 0.100 (turn 3)"
    assert decide({"turns": [{"role": USER, "wer": None}]}, Rules())[1].startswith("no_scored_turn")


def test_flat_tts_row():
    assert decide(turn(wer=0.05), Rules()) == (True, "")
    assert decide(turn(wer=0.5), Rules()) == (False, "wer: 0.500 > 0.100")


def test_rules_config_roundtrip(tmp_path):
    p = tmp_path / "rules.json"
    p.write_text(json.dumps({"max_wer": 0.2, "score_roles": ["assistant", "user"]}))
    r = Rules.load(p)
    assert r.max_wer == 0.2 and r.score_roles == ("assistant", "user")
    assert Rules.from_dict(r.to_dict()) == r
    y = tmp_path / "rules.yaml"
    y.write_text("max_cer: 0.3\n")
    assert Rules.load(y).max_cer == 0.3
    with pytest.raises(ValueError, match="unknown rule"):
        Rules.from_dict({"max_werr": 0.1})


def test_dialogue_without_user_turn_or_with_absurd_text_is_rejected_with_a_reason():
    only_assistant = {"turns": [turn()]}
    assert decide(only_assistant, Rules()) == (False, "no_user_turn: roles ['assistant'], no user turn to answer")
    assert decide(only_assistant, Rules(require_user_turn=False)) == (True, "")
    only_unscored = {"turns": [{"role": USER, "wer": None, "text": "hi"}, {"role": ASSISTANT, "wer": None, "text": "hello"}]}
    assert decide(only_unscored, Rules())[1] == "no_scored_turn: no turn of a scored role ['assistant']"
    huge = dialogue(turn(text="word " * 1000))
    assert decide(huge, Rules()) == (False, "text_too_long: 5000 chars > 4000 (turn 1)")
    assert decide(huge, Rules(max_text_chars=None)) == (True, "")
    assert decide(turn(text="x" * 4001), Rules())[1] == "text_too_long: 4001 chars > 4000"  # flat rows too
    assert decide(dialogue(turn(text="x" * 4000)), Rules()) == (True, "")
    # rules with no audio come first: an absurd text is named even when its WER would also fail
    assert reason_code(decide(dialogue(turn(wer=0.9, text="y" * 5000)), Rules())[1]) == "text_too_long"
    assert Rules.from_dict({"max_text_chars": 100, "require_user_turn": False}).max_text_chars == 100


class CountingAsr:
    """The real tiny.en backend, counting the clips it is asked to transcribe."""

    def __init__(self, asr):
        self.asr, self.name, self.clips = asr, asr.name, 0

    def transcribe(self, audios):
        self.clips += len(audios)
        return self.asr.transcribe(audios)


def test_score_batch_rejects_text_and_role_problems_before_asr(faster_asr):
    import numpy as np

    from tokenization.dialogue_schema import DialogueRow, DialogueTurn, pcm_to_flac
    from filtering.filter_job import ScoreBatch
    from tokenization.engine.jobs import Item

    tone = pcm_to_flac(0.1 * np.sin(np.linspace(0, 440 * 2 * np.pi, SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE)

    def row(did, *turns):
        return Item(unit=0, shard=0, pos=0, id=did,
                    row=DialogueRow(did, "src", "en", "", [DialogueTurn(r, t, tone, SAMPLE_RATE, 1.0) for r, t in turns],
                                    audio_sha1="", run_id="r", split="train"))

    asr = CountingAsr(faster_asr)
    records = [row("ok", (USER, "Hi there."), (ASSISTANT, "Hello.")),
               row("no_user", (ASSISTANT, "Hello.")),
               row("absurd", (USER, "Hi."), (ASSISTANT, "la " * 2000))]
    out = ScoreBatch(asr, Rules()).score(records)
    assert asr.clips == 1  # only the well-formed dialogue's assistant turn was transcribed
    reasons = {r.row.dialogue_id: r.row.reject_reason for r in out}
    assert reasons["no_user"].startswith("no_user_turn:") and reasons["absurd"] == "text_too_long: 6000 chars > 4000 (turn 1)"
    assert [t.wer for t in out[2].row.turns] == [None, None] and out[0].row.turns[1].wer is not None
