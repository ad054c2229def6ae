"""Flag, input and output mistakes of the data jobs: one `error:` line, exit 2, before Ray starts."""

from __future__ import annotations

import pytest
import ray

from pipelines import filter as filter_job
from pipelines import tokenize
from pipelines.cli import EXIT_USER_ERROR, run


def _user_error(capsys, main, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    assert exc.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not ray.is_initialized()  # failed where the person is, before any cluster
    return err


def test_tokenize_rejects_bad_flags_inputs_and_outputs_before_ray(capsys, tmp_path, tts_sample):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    ok = ["--input", str(tts_sample), "--codec", "tiny"]
    err = _user_error(capsys, tokenize.main, [*ok, "--output", str(a_file / "out")])
    assert f"--output {a_file / 'out'}" in err and "is a file" in err
    err = _user_error(capsys, tokenize.main, ["--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")])
    assert "--input" in err and "nope.jsonl" in err
    assert "--rows-per-shard 0" in _user_error(capsys, tokenize.main, [*ok, "--output", str(tmp_path / "o"), "--rows-per-shard", "0"])
    assert "--valid-fraction" in _user_error(capsys, tokenize.main, [*ok, "--output", str(tmp_path / "o"), "--valid-fraction", "2"])


def test_filter_needs_the_audio_manifest_for_token_shards(capsys, tmp_path):
    (tmp_path / "tok" / "shards").mkdir(parents=True)
    err = _user_error(capsys, filter_job.main, ["--input", str(tmp_path / "tok"), "--output", str(tmp_path / "o")])
    assert "--audio-manifest" in err and str(tmp_path / "tok") in err
