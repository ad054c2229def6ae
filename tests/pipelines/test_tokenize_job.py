"""The tokenization job end to end on real espeak speech, with an embedded local Ray."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from tests.jobs import kill_session, last_json, visible_files
from tests.pipelines.conftest import BAD_KINDS
from tokenization.engine.output_folder import shard_name
from tokenization.schema import SCHEMA_VERSION, codes_to_numpy, read_file_metadata, token_schema
from tokenization.readers.registry import list_units
from tokenization.units import ReaderOptions

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
JOB_ARGS = ["--codec", "tiny", "--rows-per-shard", "2", "--batch-size", "2", "--max-duration", "8"]




def kill9_rerun_matches(cmd: list[str], out: Path, ref_out: Path) -> None:
    """Run `cmd`, kill -9 its whole session once a shard is done, rerun it: it writes only the missing shards
    and every file equals the uninterrupted run's (`ref_out`) byte for byte."""
    env = {**os.environ, "RAY_ADDRESS": "local"}  # its own embedded Ray, so kill -9 takes all of it down
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "_progress").glob("*.json")):
        time.sleep(0.05)
    kill_session(proc)
    done_at_kill = len(list((out / "_progress").glob("*.json")))
    n_shards = len(list((ref_out / "_progress").glob("*.json")))
    assert 1 <= done_at_kill < n_shards, "the kill should land mid-run"
    for shard in (out / "shards").glob("*.parquet"):
        pq.read_metadata(shard)  # every visible shard is complete

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = last_json(rerun.stdout)
    assert summary["shards_skipped"] == done_at_kill and summary["shards_written"] == n_shards - done_at_kill
    assert_same_files(out, ref_out)


def assert_same_files(out: Path, ref_out: Path) -> None:
    for sub in ("shards", "quarantine"):
        ref_files = sorted(p.name for p in (ref_out / sub).glob("*.parquet"))
        assert ref_files and sorted(p.name for p in (out / sub).glob("*.parquet")) == ref_files
        for name in ref_files:
            assert (out / sub / name).read_bytes() == (ref_out / sub / name).read_bytes(), f"{sub}/{name} differs"


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(ray_local, dirty_corpus, tmp_path_factory):
    """One uninterrupted run: (output folder, its summary)."""
    from pipelines.tokenize import main

    out = tmp_path_factory.mktemp("tok") / "out"
    summary = main(["--input", str(dirty_corpus), "--output", str(out), *JOB_ARGS])
    return out, summary


def test_every_row_is_kept_or_quarantined_with_its_reason(reference):
    out, summary = reference
    manifest = json.loads((out / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["in"] == 12 + len(BAD_KINDS) == summary["rows_in"]
    assert counts["kept"] == 12 and counts["quarantined"] == len(BAD_KINDS)
    assert counts["in"] == counts["kept"] + counts["quarantined"]
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    assert len(quarantine) == len(BAD_KINDS)
    for kind, reason in BAD_KINDS.items():
        hits = [q for q in quarantine if reason in q["reason"]]
        assert len(hits) == 1, f"{kind}: {reason!r} not found once in {[q['reason'] for q in quarantine]}"
        q = hits[0]
        assert q["stage"] in ("manifest", "load")
        assert q["file"] and (q["file"] in q["reason"] or q["stage"] == "manifest")


def test_shards_follow_the_contract(reference, dirty_corpus):
    out, _ = reference
    files = sorted((out / "shards").glob("*.parquet"))
    progress = sorted(p.stem for p in (out / "_progress").glob("*.json"))
    (unit,) = list_units(str(dirty_corpus), "jsonl", ReaderOptions())
    assert progress == [shard_name(unit.key, k) for k in range(len(progress))]  # one manifest = one unit: its shards, all done
    assert {f.stem for f in files} <= set(progress) and len(files) >= 6  # all-quarantined shards leave no empty file
    table = pq.read_table(files)
    assert pq.read_schema(files[0]).remove_metadata() == token_schema()
    assert table.num_rows == 12 and len(set(table.column("utt_id").to_pylist())) == 12
    meta = read_file_metadata(files[0])
    assert meta["codec_name"] == "mimi" and meta["n_codebooks"] == "8" and meta["codebook_size"] == "2048"
    assert float(meta["frame_rate"]) == 12.5 and meta["sample_rate"] == "24000" and meta["schema_version"] == SCHEMA_VERSION
    for row in table.to_pylist():
        codes = codes_to_numpy(row["codes"])
        assert codes.shape == (row["n_frames"], 8) and codes.max() < 2048
        assert abs(row["n_frames"] - math.ceil(row["duration_s"] * 12.5)) <= 1
        assert row["text"] and len(row["audio_sha1"]) == 40 and row["run_id"] == json.loads((out / "_run.json").read_text())["run_id"]
    # input order is kept inside and across shards
    expected = [json.loads(line)["id"] for line in dirty_corpus.read_text("utf-8", "replace").splitlines() if line.startswith('{"id": "spk')]
    assert table.column("utt_id").to_pylist() == list(dict.fromkeys(expected))
    listed = json.loads((out / "_manifest.json").read_text())["shards"]
    assert sum(s["rows"] for s in listed) == 12 and all(len(s["sha1"]) == 40 for s in listed)


def test_shards_open_in_other_readers(reference, tmp_path):
    import datasets
    import duckdb
    import polars as pl

    out, _ = reference
    pattern = str(out / "shards" / "*.parquet")
    n, frames = duckdb.sql(f"select count(*), sum(len(codes)) from read_parquet('{pattern}')").fetchall()[0]
    assert n == 12 and frames == pq.read_table(out / "shards").column("n_frames").to_numpy().sum()
    df = pl.read_parquet(pattern)
    assert df.height == 12 and df["codes"][0].len() == df["n_frames"][0]
    ds = datasets.load_dataset("parquet", data_files=pattern, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 12 and np.asarray(ds[0]["codes"]).shape == (ds[0]["n_frames"], 8)


def test_rerun_skips_finished_shards(reference, dirty_corpus):
    from pipelines.tokenize import main

    out, first = reference
    before = {p: p.read_bytes() for p in (out / "shards").glob("*.parquet")}
    again = main(["--input", str(dirty_corpus), "--output", str(out), *JOB_ARGS])
    assert again["shards_written"] == 0 and again["shards_skipped"] == first["shards_written"] >= len(before) > 0
    assert {p: p.read_bytes() for p in (out / "shards").glob("*.parquet")} == before


def _writer_pids(session: int) -> list[int]:
    """The shard-writer actor process(es) of a job's embedded Ray (found by their process title)."""
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if os.getsid(p.pid) == session and "_WriterActor" in " ".join(p.info["cmdline"] or []):
                pids.append(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return pids


def test_killed_writer_is_rerun_within_the_job(dirty_corpus, tiny_codec, tmp_path):
    """kill -9 of the writer actor while it holds rows of an unfinished shard: the same job re-runs the unit
    it lost and ends with the files the engine writes in-process for the same config; the summary counts
    only shards that were written."""
    import re
    import threading

    from tokenization.engine.local_run import run_local
    from tokenization.schema import file_metadata
    from tokenization.tokenize_job import tokenize_job
    from tokenization.readers.registry import list_units
    from tokenization.units import ReaderOptions

    out = tmp_path / "writer_killed"
    args = ["--codec", "tiny", "--rows-per-shard", "100", "--batch-size", "1", "--block-rows", "1", "--max-duration", "8"]  # one shard: 23 rows
    cmd = [sys.executable, "-m", "pipelines.tokenize", "--input", str(dirty_corpus), "--output", str(out), *args, "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "RAY_ADDRESS": "local"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err, rows_at_writer = [], [0]

    def follow_stderr():  # the driver's progress line counts rows the writer took (and buffers until the shard is whole)
        for chunk in iter(lambda: proc.stderr.read(64), ""):
            err.append(chunk)
            counts = re.findall(r"(\d+)row", "".join(err)[-400:])
            rows_at_writer[0] = max([rows_at_writer[0], *map(int, counts)])

    reader = threading.Thread(target=follow_stderr, daemon=True)
    reader.start()
    killed, deadline = [], time.time() + 300
    while time.time() < deadline and proc.poll() is None and not killed:
        if 0 < rows_at_writer[0] < 23:
            for pid in _writer_pids(proc.pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    stdout = proc.stdout.read()
    proc.wait(timeout=400)
    reader.join(timeout=10)
    stderr = "".join(err)
    assert killed, "the writer should be killed while it buffers rows"
    assert proc.returncode == 0, stderr[-3000:]
    assert "running them again" in stderr  # the lost unit ran again inside this job
    summary = json.loads([line for line in stdout.splitlines() if line.startswith('{"output"')][-1])  # Ray may log after it
    assert summary["shards_written"] == 1 and summary["shards_skipped"] == 0
    assert summary["kept"] == 12 and summary["rows_in"] == 23 == summary["kept"] + summary["quarantined"]

    run_id = json.loads((out / "_run.json").read_text())["run_id"]
    ref = tmp_path / "in_process"
    opts = ReaderOptions()
    job = tokenize_job(opts, tiny_codec, run_id, target_rate=tiny_codec.sample_rate, max_seconds=8.0, rows_per_shard=100, batch_size=1)
    run_local(job, list_units(str(dirty_corpus), "jsonl", opts), str(ref), file_metadata(tiny_codec.info, {"run_id": run_id}))
    assert_same_files(out, ref)


# --- WebDataset tars (Emilia layout): truncated tar, duplicates across tars, kill -9 resume, S3 --------------

WDS_ARGS = ["--format", "webdataset", "--codec", "tiny", "--rows-per-shard", "2", "--batch-size", "2", "--max-duration", "8"]


@pytest.fixture(scope="module")
def wds_corpus(tmp_path_factory):
    """The Emilia-style tars of tests/corpora.py plus a copy of the first tar listed last: every id in it is a
    duplicate of an earlier tar's, so the distributed id pre-pass must quarantine all of them."""
    import shutil

    from tests import corpora

    corpus = corpora.make_webdataset(tmp_path_factory.mktemp("emilia") / "EN", tmp_path_factory.mktemp("speech"))
    shutil.copy(corpus.input / "EN-B000000.tar", corpus.input / "EN-B000009.tar")
    return corpus


@pytest.fixture(scope="module")
def wds_reference(ray_local, wds_corpus, tmp_path_factory):
    from pipelines.tokenize import main

    out = tmp_path_factory.mktemp("wds") / "out"
    return out, main(["--input", str(wds_corpus.input), "--output", str(out), *WDS_ARGS])


def test_tars_tokenize_with_every_bad_kind_and_duplicate_quarantined(wds_reference, wds_corpus):
    out, summary = wds_reference
    n_dup = 5  # the copied tar's records: 3 good, one without audio, one undecodable
    assert summary["rows_in"] == wds_corpus.n_rows + n_dup == summary["kept"] + summary["quarantined"]
    kept = pq.read_table(out / "shards").to_pylist()
    assert sorted(r["utt_id"] for r in kept) == sorted(wds_corpus.good)
    assert all(r["text"] == wds_corpus.good[r["utt_id"]] for r in kept)
    by_id = {r["utt_id"]: r for r in kept}
    assert json.loads(by_id["EN_B000000_S00000_W000000"]["meta"])["dnsmos"] == 3.25  # Emilia's other keys kept in `meta`
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    for name, fragment in {**wds_corpus.bad, **wds_corpus.load_bad}.items():
        assert any(fragment in q["reason"] and (name in q["reason"] or name in q["file"] or name == q["utt_id"])
                   for q in quarantine), (name, fragment)
    broken = [q for q in quarantine if "truncated or corrupt at byte" in q["reason"]]
    assert len(broken) == 1 and broken[0]["file"].endswith("EN-B000002.tar")
    dups = [q for q in quarantine if q["reason"].startswith("duplicate id")]
    # the copy's sample without audio is quarantined for that (it has no usable record); its 4 others as duplicates
    assert len(dups) == n_dup - 1 and all("EN-B000000.tar" in q["reason"] and q["file"].endswith("EN-B000009.tar") for q in dups)
    assert len(dups) == len({q["utt_id"] for q in dups})
    names = sorted(p.stem for p in (out / "_progress").glob("*.json"))
    copy = next(u for u in list_units(str(wds_corpus.input), "webdataset", ReaderOptions()) if u.uri.endswith("EN-B000009.tar"))
    assert [n for n in names if copy.key in n] == [shard_name(copy.key, k) for k in range(3)]  # the copy's 5 records: 3 shards


def test_tars_kill9_then_rerun_is_byte_identical(wds_reference, wds_corpus, tmp_path):
    ref_out, _ = wds_reference
    out = tmp_path / "killed"
    # A block per batch: shards finish one after another, so the kill lands between them (not in the run id).
    cmd = [sys.executable, "-m", "pipelines.tokenize", "--input", str(wds_corpus.input), "--output", str(out), *WDS_ARGS,
           "--num-cpus", "2", "--block-rows", "1"]
    kill9_rerun_matches(cmd, out, ref_out)


def test_tars_from_s3_to_s3(wds_reference, wds_corpus, tmp_path):
    """The same tars from a moto S3 server: a paged listing, tars streamed in tasks; the same rows and codes."""
    import io

    from tests.corpora import upload_tree
    from tests.s3_server import moto_s3

    with moto_s3("wds") as (client, env):
        uri = upload_tree(client, "wds", wds_corpus.input, "emilia/EN")
        cmd = [sys.executable, "-m", "pipelines.tokenize", "--input", f"{uri}/*.tar", "--output", "s3://wds/tokens", *WDS_ARGS,
               "--num-cpus", "2"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400,
                              env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, "RAY_ADDRESS": "local", **env})
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = last_json(proc.stdout)
        keys = sorted(o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="wds", Prefix="tokens/")
                      for o in page.get("Contents", []))
        s3_rows = [r for k in keys if k.startswith("tokens/shards/")
                   for r in pq.read_table(io.BytesIO(client.get_object(Bucket="wds", Key=k)["Body"].read())).to_pylist()]
    ref_out, ref = wds_reference
    assert {k: summary[k] for k in ("rows_in", "kept", "quarantined")} == {k: ref[k] for k in ("rows_in", "kept", "quarantined")}
    local_rows = pq.read_table(ref_out / "shards").to_pylist()
    assert s3_rows == local_rows  # the same config and unit keys (paths under the input root): the same run id and shard names


# --- a corpus that grows: Emilia-style tars grow by a tar, have one re-uploaded, lose one --------------------


def _retar(src: Path, dst: Path, rename: tuple[str, str] = ("", ""), drop_last: int = 0) -> None:
    """A tar with `src`'s members (minus the last `drop_last`), `rename[0]` -> `rename[1]` in names and JSON."""
    import tarfile

    from tests.corpora import _tar

    with tarfile.open(src) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]
    members = members[: len(members) - drop_last]
    old, new = rename
    _tar(dst, [(n.replace(old, new), d.replace(old.encode(), new.encode()) if n.endswith(".json") and old else d)
               for n, d in members])


def _tokenize_into(corpus: Path, out: Path, codec) -> tuple:
    """The tokenize job's steps over the tars, in this process (no Ray), as `pipelines.tokenize` orders them:
    prepare, sync the folder to the listing, run what is pending, write the manifest."""
    from tokenization.engine.local_run import run_local
    from tokenization.engine.output_folder import compute_run_id, prepare_output, sync_output
    from tokenization.engine.writer import write_manifest
    from tokenization.schema import SHARDS, file_metadata
    from tokenization.tokenize_job import tokenize_job

    opts = ReaderOptions()
    units = list_units(str(corpus), "webdataset", opts)
    config = {"codec": codec.info.__dict__, "rows_per_shard": 2}
    run_id = compute_run_id(config)
    prepare_output(str(out), run_id, config)
    plan = sync_output(str(out), units)
    job = tokenize_job(opts, codec, run_id, target_rate=codec.sample_rate, max_seconds=8.0, rows_per_shard=2, batch_size=2)
    written = run_local(job, units, str(out), file_metadata(codec.info, {"run_id": run_id}))
    write_manifest(str(out), run_id, units, (SHARDS,), {"codec": codec.info.__dict__})
    return plan, written, {u.uri.rsplit("/", 1)[-1]: u.key for u in units}


def test_tars_grow_change_remove_redo_only_that_tar_and_match_a_fresh_run(wds_corpus, tiny_codec, tmp_path):
    """The held-out check, with the job's steps in one process: the tars grow by one, have one re-uploaded with
    other content, lose one; each rerun into the same folder redoes only that tar and equals a fresh run."""
    import shutil

    corpus, out = tmp_path / "EN", tmp_path / "living"
    shutil.copytree(wds_corpus.input, corpus)
    _tokenize_into(corpus, out, tiny_codec)
    steps = [
        ("grow", "EN-B000005.tar", lambda: _retar(corpus / "EN-B000000.tar", corpus / "EN-B000005.tar", ("B000000", "B000005"))),
        ("change", "EN-B000001.tar", lambda: _retar(corpus / "EN-B000001.tar", corpus / "EN-B000001.tar", drop_last=2)),
        ("remove", "EN-B000002.tar", lambda: (corpus / "EN-B000002.tar").unlink()),
    ]
    for what, tar, change in steps:
        before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").iterdir()}
        change()
        plan, written, keys = _tokenize_into(corpus, out, tiny_codec)
        key = keys.get(tar) or plan.removed[0]
        assert plan.counts() == {"units_new": int(what == "grow"), "units_changed": int(what == "change"),
                                 "units_removed": int(what == "remove"), "units_unchanged": 4}, what
        if what == "remove":  # nothing runs; every file of the tar's unit is gone
            assert written == [] and not [p for p in out.rglob("*") if key in p.name], what
        else:  # only that tar's shards are written
            assert written and all(key in w for w in written), (what, written)
        for name, (mtime, data) in before.items():  # every other tar's shards: same bytes, same mtime
            if key not in name:
                p = out / "shards" / name
                assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data, (what, name)
        fresh = tmp_path / f"fresh_{what}"
        _tokenize_into(corpus, fresh, tiny_codec)
        assert visible_files(out) == visible_files(fresh), what


UNIT_COUNTS = ("units_new", "units_changed", "units_removed", "units_unchanged")


def test_tars_incremental_run_as_users_run_it(wds_reference, wds_corpus, tmp_path, capsys, monkeypatch):
    """`pipelines.tokenize` into a folder made before one tar arrived and before another was re-uploaded: another
    --rows-per-shard is refused in one line; the same flags run only those two tars, report it, and leave the
    folder equal to the fresh run's byte for byte. (Removal and SIGKILL during an incremental run: the tests above
    and tests/tokenization/test_engine.py.)"""
    import shutil

    from pipelines.tokenize import main
    from tokenization.engine import duplicates
    from tokenization.engine.output_folder import retire_units
    from tokenization.errors import UserError

    # Two of four tars are fresh: above the share where the pre-pass counts only their ids; lift the bound so
    # the Ray id scan of that incremental count runs here, checked against the reference run's full count.
    monkeypatch.setattr(duplicates, "FRESH_FRACTION", 1.0)

    ref_out, _ = wds_reference
    out = tmp_path / "living"
    shutil.copytree(ref_out, out)  # copy2: the files and their mtimes
    keys = {u.uri.rsplit("/", 1)[-1]: u.key for u in list_units(str(wds_corpus.input), "webdataset", ReaderOptions())}
    retire_units(str(out), {keys["EN-B000002.tar"]}, None, ("shards",))  # the folder as it was before that tar arrived

    with pytest.raises(UserError) as refused:
        main(["--input", str(wds_corpus.input), "--output", str(out), *WDS_ARGS, "--rows-per-shard", "3"])
    assert "\n" not in str(refused.value) and "rows_per_shard 2 -> 3" in str(refused.value)

    touched = wds_corpus.input / "EN-B000001.tar"
    st = touched.stat()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir() if keys["EN-B000001.tar"] not in p.name}
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-uploaded: same size, new mtime
    capsys.readouterr()
    try:
        s = main(["--input", str(wds_corpus.input), "--output", str(out), *WDS_ARGS])
    finally:
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert {k: s[k] for k in UNIT_COUNTS} == {"units_new": 1, "units_changed": 1, "units_removed": 0, "units_unchanged": 2}
    assert "units: 1 new, 1 changed, 0 removed, 2 unchanged" in capsys.readouterr().err
    assert_same_files(out, ref_out)
    assert (out / "_manifest.json").read_bytes() == (ref_out / "_manifest.json").read_bytes()
    for name, mtime in kept.items():  # the other tars' shards were never rewritten
        assert (out / "shards" / name).stat().st_mtime_ns == mtime, name
