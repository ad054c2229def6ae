"""Pure keep/reject rules."""

import json

import pytest

from filtering.rules import Rules, decide, reason_code


def turn(**kw):
    t = {"role": "assistant", "wer": 0.0, "cer": 0.0, "duration_s": 2.0, "n_ref_words": 5, "n_del": 0, "n_ins": 0}
    t.update(kw)
    return t


def dialogue(*turns):
    return {"turns": [{"role": "user", "wer": None, "duration_s": 1.0}, *turns]}


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


def test_cer_rule_and_switching_rules_off():
    assert decide(dialogue(turn(cer=0.3)), Rules(max_cer=0.2))[1].startswith("cer:")
    assert decide(dialogue(turn(wer=0.9)), Rules(max_wer=None)) == (True, "")


def test_first_failing_turn_is_named_and_unscored_rows_rejected():
    keep, reason = decide(dialogue(turn(), {"role": "user", "wer": None}, turn(wer=0.5)), Rules())
    assert not keep and reason == "wer: 0.500 > 0.100 (turn 3)"
    assert decide({"turns": [{"role": "user", "wer": None}]}, Rules())[1].startswith("no_scored_turn")


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
