"""User mistakes through the real command line: exit 2, ONE stderr line naming the flag/key and path,
and no Ray session started (Ray's temp folder, RAY_TMPDIR, stays empty).

In-process checks of the same flags live in test_job_args.py and tests/training/test_train_configs.py;
these run `python -m pipelines.X` as a person does, so import-time output and the exit code are real.
All commands start at once: each is an interpreter start and an import, not a job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import EXIT_USER_ERROR
from pipelines.logs import TERMINAL_MARK, _ConsoleFilter, log_path_for
from training.stage_config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]
STAGE1 = os.path.join(CONFIG_DIR, "stage1_tiny.yaml")


def _cases(tmp: Path, tts_sample: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (argv after `python -m`, substrings the one error line must hold)."""
    a_file = tmp / "plain.txt"
    a_file.write_text("x")
    missing = tmp / "missing"
    tts = str(tts_sample)
    q_rules = tmp / "q_rules.yaml"
    q_rules.write_text("min_dnsmos_ovrl: 2.4\n")
    return {
        "tokenize missing input": (["pipelines.tokenize", "--input", str(missing / "m.jsonl"), "--output", str(tmp / "o1")],
                                   ["--input", str(missing / "m.jsonl")]),
        "tokenize unwritable output": (["pipelines.tokenize", "--input", tts, "--output", str(a_file / "out"), "--codec", "tiny"],
                                       ["--output", str(a_file), "is a file"]),
        "filter bad max-wer": (["pipelines.filter", "--input", tts, "--output", str(tmp / "o2"), "--max-wer", "-0.5"],
                               ["--max-wer -0.5", ">= 0"]),
        "filter missing input": (["pipelines.filter", "--input", str(missing / "d.jsonl"), "--output", str(tmp / "o3")],
                                 ["--input", str(missing / "d.jsonl")]),
        "filter quality rule not scored": (["pipelines.filter", "--input", tts, "--output", str(tmp / "o4"), "--rules", str(q_rules),
                                            "--quality", "vad"], [f"--rules {q_rules}", "min_dnsmos_ovrl", "--quality dnsmos"]),
        "filter unknown quality": (["pipelines.filter", "--input", tts, "--output", str(tmp / "o5"), "--quality", "dnsmos,pesq"],
                                   ["--quality dnsmos,pesq", "'pesq'"]),
        "train zero_stage": (["pipelines.train", "--stage", "1", "--config", STAGE1, "zero_stage=7"], ["zero_stage", STAGE1]),
        "train unknown key": (["pipelines.train", "--stage", "1", "--config", STAGE1, "optim.lrr=1"], ["optim.lrr", STAGE1]),
        "dedup missing input": (["pipelines.dedup", "--input", str(missing / "run"), "--output", str(tmp / "dd")],
                                [str(missing / "run"), "not a tokenize or filter output"]),
        "audit missing folder": (["pipelines.audit", str(missing / "run"), "--report", str(tmp / "r")], [str(missing / "run")]),
        "speak missing checkpoint": (["pipelines.speak", "--checkpoint", str(missing / "ck"), "--text", "hi", "--out", str(tmp / "a.wav")],
                                     ["--checkpoint", str(missing / "ck"), "pipelines.train"]),
        "speak missing audio": (["pipelines.speak", "--tiny", "--audio", str(missing / "q.wav"), "--out", str(tmp / "a.wav")],
                                ["--audio", str(missing / "q.wav")]),
        "speak not a checkpoint": (["pipelines.speak", "--checkpoint", str(tmp), "--text", "hi", "--out", str(tmp / "a.wav")],
                                   ["--checkpoint", str(tmp), "config.json"]),
        "evaluate missing checkpoint": (["pipelines.evaluate", "--checkpoint", str(missing / "ck"), "--data", tts,
                                         "--output", str(tmp / "ev")], ["--checkpoint", str(missing / "ck")]),
        "demo unwritable output": (["pipelines.demo", "--output", str(a_file / "demo")], ["--output", str(a_file)]),
    }


def test_user_errors_exit_2_in_one_line_before_ray(tmp_path, tts_sample):
    ray_tmp = tmp_path / "ray_tmp"
    ray_tmp.mkdir()
    # Ray puts its session_* folders under $RAY_TMPDIR/ray (ray._common.utils.get_default_system_temp_dir).
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(ray_tmp), "RAY_ADDRESS": "local", "VOCALNET_DEBUG": "0"}
    cases = _cases(tmp_path, tts_sample)
    procs = {name: subprocess.Popen([sys.executable, "-m", *argv], cwd=tmp_path, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, (argv, _) in cases.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == EXIT_USER_ERROR, (name, proc.returncode, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err[-2000:])
        for needle in cases[name][1]:
            assert needle in lines[0], (name, needle, lines[0])
        assert out == "", (name, out)
    assert list(ray_tmp.iterdir()) == [], "a Ray session was started before the user error"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "ev").exists()  # no half-made output, no log folder


def test_log_goes_under_a_local_output_and_to_a_temp_file_for_object_storage(tmp_path):
    assert log_path_for("tokenize", tmp_path / "out") == tmp_path / "out" / "logs" / "tokenize.log"
    remote = log_path_for("filter", "s3://bucket/out")
    assert "://" not in str(remote) and remote.name.startswith("filter-") and remote.suffix == ".log"


def test_console_shows_our_warnings_and_anyones_errors_but_no_dependency_noise():
    import logging

    def shown(name: str, level: int) -> bool:
        return _ConsoleFilter().filter(logging.LogRecord(name, level, __file__, 1, "m", None, None))

    assert shown("pipelines.train", logging.WARNING) and shown("training.recipe", logging.ERROR)
    assert shown("ray.train", logging.ERROR)
    assert not shown("pipelines.train", logging.INFO)  # per-step detail: the log file
    assert not shown("py.warnings", logging.WARNING) and not shown("py.warnings", logging.ERROR)  # FutureWarning & co.
    assert not shown("ray.data", logging.WARNING) and not shown("ray.train.v2._internal.execution.context", logging.INFO)
    # a failed Ray Data task's trace: the job raises the error itself (a storage error as one line, docs/faults.md)
    assert not shown("ray.data._internal.execution.streaming_executor_state", logging.ERROR)
    assert TERMINAL_MARK.strip()  # a visible mark: a worker line without it never reaches the terminal


def test_worker_lines_go_to_the_log_and_marked_lines_to_the_terminal(monkeypatch, tmp_path, capsys, caplog):
    """The driver-side replacement of Ray's printer, fed as Ray's log subscriber feeds it (no cluster needed)."""
    import logging

    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    from pipelines import logs

    monkeypatch.setattr(logs, "_log_path", tmp_path / "job.log")
    monkeypatch.setattr(dispatcher, "handlers", [("ray_print_logs", lambda data: print("RAY PRINTED", data))])
    assert logs.route_worker_output()
    with caplog.at_level(logging.INFO, logger="ray_workers"):
        dispatcher.emit({"lines": ["Reporting training result 1: {...}", f"{TERMINAL_MARK}stage 1 step 1/8 | loss 1.0"],
                         "pid": 7, "actor_name": "RayTrainWorker", "is_err": False})
    out = capsys.readouterr().out
    assert out == "stage 1 step 1/8 | loss 1.0\n"
    assert [r.getMessage() for r in caplog.records] == ["(RayTrainWorker pid=7) Reporting training result 1: {...}"]
