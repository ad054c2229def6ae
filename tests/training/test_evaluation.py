"""Evaluation: the speech-WER path on known speech, teacher-forced accuracy after overfitting one
utterance, split selection, and `python -m pipelines.evaluate` end to end on filter-job shards."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from tests.jobs import JOB_ENV, ROOT, TINY_EN_MODELS, run_module
from tests.training.conftest_train import write_dialogue_shards
from tokenization.audio import load_audio, resample
from tokenization.sample_corpus import espeak_to_wav
from training.data.sources import WHISPER_SAMPLE_RATE
from training.evaluation import read_examples, speech_wer, teacher_forced_metrics

# Sentences and voice the dialogue sample uses: tiny.en transcribes them exactly.
SAID = "There are seven days in a week."
OTHER = "The library is next to the post office."


def train_stage3(model, batch, steps: int, lr: float = 3e-3) -> None:
    """A few plain AdamW steps of stage-3 training on one fixed batch (no Ray, no DeepSpeed)."""
    model.set_stage(3)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    for _ in range(steps):
        loss = model(batch, stage=3)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def asr():
    from filtering.asr import load_asr

    return load_asr("tiny.en")


def _espeak(text: str, path) -> tuple[np.ndarray, int]:
    espeak_to_wav(text, path, "en-us+m3", 140)
    samples, rate = sf.read(str(path), dtype="float32")
    return samples, rate


def test_speech_wer_scores_known_speech(asr, tmp_path):
    said, rate = _espeak(SAID, tmp_path / "said.wav")
    other, _ = _espeak(OTHER, tmp_path / "other.wav")
    # at the codec's rate (24 kHz), as the evaluation hands over generated speech
    hyp, s = speech_wer(asr, resample(said, rate, 24_000), 24_000, SAID, "en")
    assert s.wer <= 0.15, (hyp, s)
    hyp2, s2 = speech_wer(asr, other, rate, SAID, "en")
    assert s2.wer >= 0.6, (hyp2, s2)
    assert s2.n_ref_words == 7
    # nothing spoken: empty hypothesis, every reference word deleted
    _, s3 = speech_wer(asr, np.zeros(0, np.float32), 24_000, SAID, "en")
    assert s3.wer == 1.0 and s3.n_del == 7


def _one_dialogue(tts_sample, codec) -> dict:
    items = [json.loads(line) for line in tts_sample.read_text().splitlines()]
    user, reply = items[0], items[1]
    codes = codec.encode([load_audio(str(tts_sample.parent / reply["audio_path"]), codec.sample_rate)])[0]
    return {"user_audio": load_audio(str(tts_sample.parent / user["audio_path"]), WHISPER_SAMPLE_RATE),
            "assistant_text": reply["text"], "assistant_codes": codes}


def test_teacher_forced_accuracy_after_overfitting_beats_untrained(make_model, tts_sample, tiny_codec, tmp_path):
    from training.data.collate import collate_dialogue
    from training.model import VocalNetM2
    from training.model.audio_encoder import build_feature_extractor

    ex = _one_dialogue(tts_sample, tiny_codec)
    model = make_model(n_mtp=2)
    batch = collate_dialogue([ex], model.tokenizer, model.cfg, build_feature_extractor(model.cfg.audio))
    batch["chunk_causal"] = True
    before = teacher_forced_metrics(model, batch)
    # every counted position is a real target: reply tokens + eos; frames + the end frame per codebook
    n_reply = len(model.tokenizer(ex["assistant_text"], add_special_tokens=False)["input_ids"])
    n_frames = len(ex["assistant_codes"])
    assert before.total["text"] == n_reply + 1
    assert before.total["cb0"] == n_frames + 1 and before.total["speech"] == 8 * (n_frames + 1)
    assert before.total["mtp2"] == 8 * (n_frames - 1)

    train_stage3(model, batch, steps=30)
    model.save_pretrained(tmp_path / "overfit")  # measured on the checkpoint as evaluation loads it
    checkpoint = VocalNetM2.from_pretrained(str(tmp_path / "overfit"))
    after = teacher_forced_metrics(checkpoint, batch)
    b, a = before.accuracy(), after.accuracy()
    for key in ("text", "speech", "cb0", "mtp1", "mtp2"):
        assert a[key] >= b[key] + 0.3, (key, b[key], a[key])
    lb, la = before.loss(), after.loss()
    assert la["loss/speech"] < 0.5 * lb["loss/speech"] and la["loss/mtp2"] < 0.5 * lb["loss/mtp2"]
    assert la["loss/text"] < lb["loss/text"]
    assert teacher_forced_metrics(model, batch).accuracy() == a  # the reloaded checkpoint is the trained model
    assert model.training  # metrics ran in eval mode and restored the mode


def test_read_examples_selects_split_and_explains_a_missing_column(tts_sample, tiny_codec, tmp_path):
    shards = write_dialogue_shards(tts_sample, tiny_codec, tmp_path / "plain", n_dialogues=4, drop=("split",))
    with pytest.raises(ValueError, match="no `split` column.*--split all"):
        read_examples(str(shards), "test")
    assert [e.dialogue_id for e in read_examples(str(shards), "all")] == ["dlg_000", "dlg_001", "dlg_002", "dlg_003"]
    assert len(read_examples(str(shards), "all", max_dialogues=2)) == 2

    table = pq.read_table(next(shards.glob("*.parquet")))
    table = table.append_column("split", pa.array(["train", "test", "valid", "test"]))
    (tmp_path / "split").mkdir()
    pq.write_table(table, tmp_path / "split" / "part-00000.parquet")
    picked = read_examples(str(tmp_path / "split"), "test")
    assert [e.dialogue_id for e in picked] == ["dlg_001", "dlg_003"]
    assert picked[0].kind == "dialogue" and picked[0].user_audio.dtype == np.float32
    with pytest.raises(ValueError, match="split must be one of"):
        read_examples(str(tmp_path / "split"), "dev")

    # a row group of test rows only is read too: the training reader's row-group pruning by split must not hide it
    only_test_first = table.set_column(table.schema.get_field_index("split"), "split", pa.array(["test", "test", "train", "valid"]))
    (tmp_path / "grouped").mkdir()
    pq.write_table(only_test_first, tmp_path / "grouped" / "part-00000.parquet", row_group_size=2)
    assert [e.dialogue_id for e in read_examples(str(tmp_path / "grouped"), "test")] == ["dlg_000", "dlg_001"]


def test_token_shards_evaluate_as_tts(make_model, tts_sample, tiny_codec, asr, tmp_path):
    from tests.training.conftest_train import write_token_shards
    from training.evaluation import EvalConfig, speak_and_score, teacher_forced_over
    from training.inference import GenerationConfig, StreamingGenerator

    shards = write_token_shards(tts_sample, tiny_codec, tmp_path / "tokens", n=3)
    examples = read_examples(str(shards), "all")
    assert [e.kind for e in examples] == ["tts"] * 3 and examples[0].user_audio is None
    model = make_model(n_mtp=1)
    tf = teacher_forced_over(model, examples, EvalConfig(batch_size=2))
    assert "text" not in tf.total  # stage 1: speech only
    assert tf.total["cb0"] == sum(len(e.example["codes"]) + 1 for e in examples)
    gen = StreamingGenerator(model, tiny_codec, gen=GenerationConfig(max_frames=15, ignore_eos=True))
    row = speak_and_score(gen, asr, examples[0])
    assert row["generated_text"].strip() == examples[0].reference_text.strip()  # TTS: the row's text is spoken
    assert row["text_wer_vs_reference"] == 0.0 and row["frames"] == 15 and row["rtf"] > 0


@pytest.fixture(scope="module")
def kept_shards(filter_out):
    """The filter job's `kept/` (Ray, real tiny.en, tiny codec) over the bundled dialogue sample."""
    return filter_out[0] / "kept"


@pytest.fixture(scope="module")
def tiny_export(kept_shards, tokenizer_path, tmp_path_factory):
    """A tiny 2-MTP model after a few stage-3 steps on the kept dialogues, saved as training exports it."""
    from training.data.collate import collate_dialogue
    from training.model import VocalNetConfig, VocalNetM2
    from training.model.audio_encoder import build_feature_extractor

    torch.manual_seed(0)
    model = VocalNetM2(VocalNetConfig.tiny(n_mtp=2), tokenizer_path)
    examples = [e.example for e in read_examples(str(kept_shards), "all", max_dialogues=3)]
    batch = collate_dialogue(examples, model.tokenizer, model.cfg, build_feature_extractor(model.cfg.audio))
    train_stage3(model, batch, steps=5)
    out = tmp_path_factory.mktemp("ckpt") / "export"
    model.save_pretrained(out)  # what StageRecipe.export writes
    return out


@pytest.mark.slow
def test_evaluate_cli_end_to_end(tiny_export, kept_shards, tmp_path):
    out = tmp_path / "eval"
    args = ["--checkpoint", str(tiny_export), "--data", str(kept_shards), "--output", str(out), "--max-dialogues", "3",
            "--max-frames", "30", "--max-text-tokens", "10"]
    # the sample's two assistant voices hash to train and valid: a split with no rows fails, naming those present
    proc = subprocess.run([sys.executable, "-m", "pipelines.evaluate", *args, "--split", "test"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **JOB_ENV})
    assert proc.returncode != 0 and "no rows with split == 'test'" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
    kept = pq.read_table(str(kept_shards), columns=["dialogue_id", "split"]).to_pylist()
    valid_ids = {r["dialogue_id"] for r in kept if r["split"] == "valid"}
    assert valid_ids, kept

    headline = run_module("pipelines.evaluate", *args, "--split", "valid")
    summary = json.loads((out / "eval.json").read_text())
    assert headline["wer"] == summary["wer"]
    assert {"checkpoint", "split", "n_dialogues", "n_replies", "wer", "wer_mean", "cer_mean", "first_chunk_latency_s",
            "first_chunk_latency_s_p90", "rtf", "text_acc", "speech_acc", "codebook_acc", "mtp_acc", "loss",
            "teacher_forced", "rows", "setup"} <= set(summary)
    assert summary["split"] == "valid" and summary["n_dialogues"] == min(3, len(valid_ids)) and summary["n_replies"] == len(summary["rows"]) >= 3
    assert summary["setup"]["asr_model"] in TINY_EN_MODELS and summary["setup"]["n_mtp"] == 2
    accs = [summary["text_acc"], summary["speech_acc"], *summary["codebook_acc"], *summary["mtp_acc"]]
    assert len(summary["codebook_acc"]) == 8 and len(summary["mtp_acc"]) == 2
    assert all(0.0 <= a <= 1.0 for a in accs), accs
    assert math.isfinite(summary["wer"]) and summary["wer"] >= 0
    assert 0 < summary["first_chunk_latency_s"] < 60 and 0 < summary["rtf"] < 100
    assert all(math.isfinite(v) and v > 0 for v in summary["loss"].values())
    for row in summary["rows"]:
        assert row["frames"] <= 30 and row["text_tokens"] <= 10
        assert row["dialogue_id"] in valid_ids and isinstance(row["asr_hyp"], str)
    md = (out / "eval.md").read_text()
    assert "ASR-WER of generated speech" in md and "MTP 2 (frame t+2)" in md
    assert "<table>" in (out / "eval.html").read_text()
