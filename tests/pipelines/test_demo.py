"""`make demo` as a fresh machine runs it: no espeak-ng program, so the sample speech comes from the
library in the espeakng-loader wheel, and the whole chain still ends in a spoken reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from filtering.sample_dialogues import expected_outcomes
from tests.jobs import JOB_ENV, ROOT, last_json


def path_without_espeak() -> str:
    """$PATH less every folder that holds an `espeak*` program: what a machine without the package sees."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d).is_dir() and any(Path(d).glob("espeak*")))]
    return os.pathsep.join(keep)


def ids(folder: Path) -> set[str]:
    files = sorted(folder.glob("*.parquet"))
    return {i for f in files for i in pq.read_table(f, columns=["dialogue_id"]).column("dialogue_id").to_pylist()}


@pytest.mark.slow
def test_demo_runs_end_to_end_without_the_espeak_program(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, **JOB_ENV, "PATH": path_without_espeak()}
    env.pop("VOCALNET_ESPEAK", None)  # the default choice, as `make demo` makes it
    done = subprocess.run([sys.executable, "-m", "pipelines.demo", "--output", str(out), "--steps", "1", "--num-cpus", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = last_json(done.stdout)
    assert list(result["timings_s"]) == ["tokenize", "filter", "audit", "train stage 1", "train stage 2", "train stage 3",
                                         "speak", "evaluate"]

    # The library's speech is what tiny.en hears: the sample's keeps and rejects hold on this path too
    # (the demo filters with the sample's quality rules: its noisy answer is a `dnsmos` reject).
    expected = expected_outcomes(quality=True)
    dialogue = out / "dialogue"
    assert ids(dialogue / "kept") == {d for d, o in expected.items() if o == "keep"}
    assert ids(dialogue / "rejects") == {d for d, o in expected.items() if o == "reject"}
    counts = json.loads((dialogue / "_manifest.json").read_text())["counts"]
    assert counts["quarantined"] == sum(o == "quarantine" for o in expected.values())
    tokens = json.loads((out / "tokens" / "_manifest.json").read_text())["counts"]
    assert tokens["in"] == tokens["kept"] == 36  # every voice of the TTS sample spoke, `en-gb` included

    assert (out / "report" / "index.html").stat().st_size > 0
    report = json.loads((out / "report" / "audit.json").read_text())
    assert report["rejections"]["by_reason"].get("dnsmos", 0) >= 1 and report["quality_curves"]["min_dnsmos_ovrl"]["run_threshold"]
    reply, rate = sf.read(out / "reply.wav", dtype="float32")
    assert rate > 0 and len(reply) > 0
    assert json.loads((out / "eval" / "eval.json").read_text())["n_replies"] > 0
