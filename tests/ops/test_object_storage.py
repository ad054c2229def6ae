"""Every job against a real S3 API: a moto server on 127.0.0.1, jobs run as users run them.

tokenize s3 -> s3 (and a rerun that skips finished shards), filter s3 -> s3 with the real
Whisper tiny.en, audit s3 -> s3, stage-1 training reading shards from s3 and checkpointing
to s3. Credentials and the endpoint reach the jobs only through the standard AWS_*
environment variables; the secret key must never show up in any job's output.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from filtering.sample_dialogues import expected_outcomes
from tests.jobs import last_json

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "vocalnet"
N_GOOD = 12  # sample utterances to tokenize (plus two bad inputs), kept small for time
SECRET = f"moto-secret-{uuid.uuid4().hex}"  # must appear in no job's stdout/stderr


def test_s3_endpoint_comes_from_the_standard_variables(monkeypatch):
    from tokenization import storage

    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    assert storage.s3_endpoint() is None  # AWS itself
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/")
    assert storage.s3_endpoint() == ("127.0.0.1:9000", "http")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "minio.internal:9000")  # the S3-specific one wins
    assert storage.s3_endpoint() == ("minio.internal:9000", "https")


def test_trainer_checkpoints_through_our_s3_filesystem(monkeypatch):
    """Ray Train gets the same endpoint as the data jobs, and nothing it ships to workers holds the secret."""
    import pickle

    import pyarrow.fs as pafs

    from pipelines import train as train_cli
    from training.stage_config import CONFIG_DIR, load_config

    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": SECRET}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), ["checkpoint.storage_path=s3://bkt/ckpt"])
    run = train_cli.build_trainer(cfg).run_config
    assert run.storage_path == "bkt/ckpt" and isinstance(run.storage_filesystem, pafs.S3FileSystem)
    options = run.storage_filesystem.__reduce__()[1][0]
    assert (options["endpoint_override"], options["scheme"], options["region"]) == ("127.0.0.1:9", "http", "eu-west-1")
    assert SECRET.encode() not in pickle.dumps(run.storage_filesystem)
    assert run.worker_runtime_env["env_vars"]["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"]
    assert SECRET not in json.dumps(run.worker_runtime_env)
    local = train_cli.build_trainer(load_config(os.path.join(CONFIG_DIR, "stage1_tiny.yaml"), ["checkpoint.storage_path=out/x"]))
    assert local.run_config.storage_path == os.path.abspath("out/x") and local.run_config.storage_filesystem is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _upload_tree(client, folder: Path, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), BUCKET, f"{prefix}/{f.relative_to(folder).as_posix()}")


REQUEST_HOOKS: list = []  # callables (method, path) run before the server answers a request (fault injection)


def _with_request_hooks(app):
    def hooked(environ, start_response):
        for hook in list(REQUEST_HOOKS):
            hook(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        return app(environ, start_response)

    return hooked


@pytest.fixture(scope="module")
def s3(tts_sample, tmp_path_factory):
    """A moto S3 server holding the TTS sample (+ a missing and a non-audio file) and the dialogue sample.

    Yields (boto3 client, env for job subprocesses). The env carries only the standard
    variables, so the jobs see exactly what a user's shell would give them.
    """
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server.start()
    server._server.app = _with_request_hooks(server._server.app)  # werkzeug serves `server.app` per request
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "moto-access-key",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=SECRET)
        client.create_bucket(Bucket=BUCKET)

        # TTS: the first N_GOOD sample utterances (relative audio paths), one missing file, one non-audio file
        lines = [json.loads(line) for line in tts_sample.read_text().splitlines() if line.strip()][:N_GOOD]
        lines.insert(3, {"id": "bad_missing", "audio_path": "wavs/missing.wav", "text": "gone", "speaker": "x"})
        lines.insert(7, {"id": "bad_not_audio", "audio_path": "wavs/not_audio.wav", "text": "noise", "speaker": "x"})
        for rec in lines:
            if not rec["id"].startswith("bad_"):
                client.upload_file(str(tts_sample.parent / rec["audio_path"]), BUCKET, f"tts/{rec['audio_path']}")
        client.put_object(Bucket=BUCKET, Key="tts/wavs/not_audio.wav", Body=b"RIFF not really audio")
        client.put_object(Bucket=BUCKET, Key="tts/manifest.jsonl", Body="".join(json.dumps(r) + "\n" for r in lines).encode())

        from filtering.sample_dialogues import make_dialogue_sample

        dialogues = make_dialogue_sample(tmp_path_factory.mktemp("dialogue_sample"))
        _upload_tree(client, dialogues.parent, "dialogues")
        yield client, env
    finally:
        server.stop()


def run_job(env: dict, module: str, *args: str, timeout: int = 600) -> tuple[dict | None, str]:
    """Run `python -m module args` in a fresh process (own embedded Ray); returns (last stdout line as JSON, stdout+stderr).

    Fails the test when the job fails or when its output contains the secret key.
    """
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},  # only ours
                               "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local", **env})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{module} failed:\n{proc.stderr[-4000:]}"
    assert SECRET not in output, f"{module} printed the secret key"
    try:
        return last_json(proc.stdout), output
    except AssertionError:  # a job that prints no JSON summary (pipelines.train)
        return None, output


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _bytes(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _json(client, key: str) -> dict:
    return json.loads(_bytes(client, key))


def _table(client, key: str):
    return pq.read_table(io.BytesIO(_bytes(client, key)))


TOKENIZE = ["--input", f"s3://{BUCKET}/tts/manifest.jsonl", "--output", f"s3://{BUCKET}/tokens", "--codec", "tiny",
            "--rows-per-shard", "4", "--batch-size", "4", "--num-cpus", "2"]


@pytest.fixture(scope="module")
def tokenized(s3):
    client, env = s3
    summary, _ = run_job(env, "pipelines.tokenize", *TOKENIZE)
    return summary


@pytest.mark.slow
def test_tokenize_s3_to_s3(s3, tokenized):
    client, env = s3
    n_in = N_GOOD + 2
    assert (tokenized["rows_in"], tokenized["kept"], tokenized["quarantined"]) == (n_in, N_GOOD, 2)
    manifest = _json(client, "tokens/_manifest.json")
    assert manifest["counts"]["in"] == manifest["counts"]["kept"] + manifest["counts"]["quarantined"] == n_in
    keys = _keys(client, "tokens/")
    shard_keys = [k for k in keys if k.startswith("tokens/shards/")]
    assert [f"tokens/{s['path']}" for s in manifest["shards"]] == shard_keys and len(shard_keys) == 4
    assert not [k for k in keys if ".tmp-" in k or k.endswith("/")]  # no temp names, no empty folder markers

    # read back by an independent client: pyarrow's S3 filesystem with explicit settings
    import pyarrow.fs as pafs

    from tokenization.schema import codes_to_numpy

    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                           secret_key=SECRET, region=env["AWS_REGION"])
    table = pq.read_table(f"{BUCKET}/{shard_keys[0]}", filesystem=fs)
    assert table.num_rows == manifest["shards"][0]["rows"]
    row = table.slice(0, 1).to_pylist()[0]
    assert codes_to_numpy(row["codes"]).shape == (row["n_frames"], 8)
    assert sum(pq.read_metadata(f"{BUCKET}/{k}", filesystem=fs).num_rows for k in shard_keys) == N_GOOD

    reasons = [r for k in keys if k.startswith("tokens/quarantine/") for r in _table(client, k).column("reason").to_pylist()]
    assert len(reasons) == 2, reasons
    assert any("s3://" in r and "missing.wav" in r and "file not found" in r for r in reasons), reasons
    assert any("not_audio.wav" in r and "not readable as audio" in r for r in reasons), reasons


@pytest.mark.slow
def test_tokenize_rerun_over_s3_skips_finished_shards(s3, tokenized):
    """Drop one shard (and its done mark) from S3: the rerun writes only that one, byte-identical."""
    client, env = s3
    name = _keys(client, "tokens/shards/")[1].rsplit("/", 1)[-1][: -len(".parquet")]  # the one unit's second shard
    before = _bytes(client, f"tokens/shards/{name}.parquet")
    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"tokens/shards/{name}.parquet"},
                                                             {"Key": f"tokens/_progress/{name}.json"}]})
    again, _ = run_job(env, "pipelines.tokenize", *TOKENIZE)
    assert (again["shards_written"], again["shards_skipped"]) == (1, tokenized["shards_written"] - 1)
    assert again["run_id"] == tokenized["run_id"] and again["kept"] == tokenized["kept"]
    assert _bytes(client, f"tokens/shards/{name}.parquet") == before


FILTER = ["--input", f"s3://{BUCKET}/dialogues/dialogues.jsonl", "--output", f"s3://{BUCKET}/filtered", "--asr", "tiny.en",
          "--codec", "tiny", "--rows-per-shard", "8", "--num-cpus", "2"]


@pytest.fixture(scope="module")
def filtered(s3):
    client, env = s3
    summary, _ = run_job(env, "pipelines.filter", *FILTER)
    return summary


@pytest.mark.slow
def test_filter_s3_to_s3(s3, filtered):
    client, _ = s3
    expected = expected_outcomes()
    want = {k: sum(v == k for v in expected.values()) for k in ("keep", "reject", "quarantine")}
    assert (filtered["rows_in"], filtered["kept"], filtered["rejected"], filtered["quarantined"]) == (
        len(expected), want["keep"], want["reject"], want["quarantine"])
    manifest = _json(client, "filtered/_manifest.json")
    c = manifest["counts"]
    assert c["in"] == c["kept"] + c["rejected"] + c["quarantined"] == len(expected)
    kept_ids, rejected_ids = [], []
    for key in _keys(client, "filtered/kept/"):
        kept_ids += _table(client, key).column("dialogue_id").to_pylist()
    for key in _keys(client, "filtered/rejects/"):
        rejected_ids += _table(client, key).column("dialogue_id").to_pylist()
    assert sorted(kept_ids) == sorted(d for d, v in expected.items() if v == "keep")
    assert sorted(rejected_ids) == sorted(d for d, v in expected.items() if v == "reject")


@pytest.mark.slow
def test_audit_s3_report_to_s3(s3, filtered):
    client, env = s3
    summary, output = run_job(env, "pipelines.audit", f"s3://{BUCKET}/filtered", "--report", f"s3://{BUCKET}/report")
    report = _json(client, "report/audit.json")
    s = report["stages"][0]
    assert (s["in"], s["kept"], s["rejected"], s["quarantined"]) == (
        filtered["rows_in"], filtered["kept"], filtered["rejected"], filtered["quarantined"])
    assert (summary["in"], summary["kept"]) == (s["in"], s["kept"])
    assert _bytes(client, "report/index.html").startswith(b"<!doctype html>")
    assert any(k.startswith("report/plots/") and k.endswith(".png") for k in _keys(client, "report/"))


# The S3 client retries a request once only, so that a fifth of requests throttled outlasts it often enough to
# exercise (and count) the job's own retries; the backoff is short, for time.
THROTTLED = {"VOCALNET_S3_RETRIES": "1", "VOCALNET_STORAGE_BACKOFF_S": "0.05"}


def _objects(client, prefix: str) -> dict[str, bytes]:
    return {k[len(prefix):]: _bytes(client, k) for k in _keys(client, prefix)}


@pytest.mark.slow
def test_tokenize_and_filter_with_a_fifth_of_requests_throttled_match_the_clean_runs(s3, tokenized, filtered):
    """20 % of all S3 requests (reads, writes, listings, HEADs) answered 503 SlowDown by a seeded proxy in front of
    moto: both jobs finish with every object byte-identical to the fault-free runs', and count their retries."""
    from tests.s3_server import throttling_proxy

    client, env = s3
    with throttling_proxy(env["AWS_ENDPOINT_URL"], 0.2, seed=27) as proxy:
        slow = {**env, "AWS_ENDPOINT_URL": proxy["url"], **THROTTLED}
        tok, _ = run_job(slow, "pipelines.tokenize", *[a.replace("/tokens", "/tokens-throttled") for a in TOKENIZE])
        filt, _ = run_job(slow, "pipelines.filter", *[a.replace("/filtered", "/filtered-throttled") for a in FILTER])
    stats = proxy["stats"]
    assert stats["requests"] > 200 and stats["throttled"] > 0.15 * stats["requests"], stats
    for summary, clean, prefix in ((tok, tokenized, "tokens"), (filt, filtered, "filtered")):
        assert summary["storage_retries"] > 0, summary
        assert summary["run_id"] == clean["run_id"] and summary["rows_in"] == clean["rows_in"] == summary["kept"] + summary[
            "quarantined"] + summary.get("rejected", 0)
        want, got = _objects(client, f"{prefix}/"), _objects(client, f"{prefix}-throttled/")
        assert sorted(got) == sorted(want) and len(want) > 5
        assert [k for k in want if got[k] != want[k]] == []


def test_a_missing_output_bucket_fails_in_one_line_naming_it(s3):
    """A permanent error (no such bucket) is not retried into a long wait: one line naming the URI and the cause."""
    import time

    _, env = s3
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipelines.tokenize", *TOKENIZE[:2], "--output", "s3://no-such-bucket/tokens",
                           *TOKENIZE[4:]], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, "PYTHONPATH": str(ROOT),
                               "RAY_ADDRESS": "local", **env})
    assert proc.returncode == 2 and time.time() - t0 < 60, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "error" in line.lower()] == [
        "error: --output s3://no-such-bucket/tokens: no such bucket (writing _run.json); rerun the same command once that "
        "is fixed: done shards are kept"]


TRAIN = ["max_steps=4", "log_every=1", "checkpoint.every_steps=2", "checkpoint.num_to_keep=2", "scaling.num_workers=1",
         "data.micro_batch_size=2", "data.buffer_size=8", f"data.path=s3://{BUCKET}/tokens/shards",
         f"checkpoint.storage_path=s3://{BUCKET}/ckpt", "checkpoint.run_name=stage1"]


def _checkpoints(client) -> tuple[list[str], list[str]]:
    """(all keys under the run, its Ray checkpoint folder names in order)."""
    keys = _keys(client, "ckpt/stage1/")
    names = {k.split("/")[2] for k in keys}
    return keys, sorted(n for n in names if n.startswith("checkpoint_") and not n.endswith(".json"))


@pytest.mark.slow
def test_train_stage1_reads_s3_checkpoints_to_s3_and_resumes(s3, tokenized, tmp_path):
    client, env = s3
    tb = f"tensorboard_dir={tmp_path / 'tb'}"
    _, output = run_job(env, "pipelines.train", "--stage", "1", "--config", "training/configs/stage1_tiny.yaml", *TRAIN, tb)
    keys, ckpts = _checkpoints(client)
    assert len(ckpts) == 2, keys  # checkpoints at steps 2 and 4, num_to_keep=2
    final = [k.split("/", 3)[3] for k in keys if k.split("/")[2] == ckpts[-1]]
    assert {"latest", "trainer_state_rank0.json", "rng_state_rank0.safetensors", "checksums_rank0.json"} <= set(final), final  # no pickle of ours; sealed
    assert any(k.startswith("step_00000004/") for k in final) and "model/model.safetensors" in final
    state = _json(client, f"ckpt/stage1/{ckpts[-1]}/trainer_state_rank0.json")
    assert state["step"] == 4 and state["world_size"] == 1
    assert {"ckpt/stage1/export/model.safetensors", "ckpt/stage1/export/config.json"} <= set(keys)
    assert f"exported model -> s3://{BUCKET}/ckpt/stage1/export" in output

    # the same run, longer: it resumes from the step-4 checkpoint in S3 instead of starting over
    run_job(env, "pipelines.train", "--stage", "1", "--config", "training/configs/stage1_tiny.yaml",
            *[o for o in TRAIN if not o.startswith("max_steps")], "max_steps=6", tb)
    keys, ckpts = _checkpoints(client)
    assert _json(client, f"ckpt/stage1/{ckpts[-1]}/trainer_state_rank0.json")["step"] == 6
    rows = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]

    # The worker SIGKILLed while the step-4 checkpoint is being uploaded (at the first object of its folder): Ray
    # Train's retry skips that partial folder for the last checkpoint it registered and reaches the same loss.
    killed = _kill_worker_at_second_checkpoint(env, "ckpt/stage1_killed/")
    REQUEST_HOOKS.append(killed)
    try:
        run_job(env, "pipelines.train", "--stage", "1", "--config", "training/configs/stage1_tiny.yaml",
                *[o for o in TRAIN if not o.startswith("checkpoint.run_name")], "checkpoint.run_name=stage1_killed",
                f"tensorboard_dir={tmp_path / 'tb_killed'}")
    finally:
        REQUEST_HOOKS.remove(killed)
    assert killed.pids, "no worker was killed mid-upload"
    partial = killed.folders[1]
    keys = _keys(client, "ckpt/stage1_killed/")
    partial_files = {k.split("/", 3)[3] for k in keys if k.split("/")[2] == partial}
    complete = {k.split("/", 3)[3] for k in keys if k.split("/")[2] == killed.folders[-1]}
    assert len(partial_files) < len(complete), partial_files  # the upload was cut short
    rows_killed = [json.loads(line) for line in (tmp_path / "tb_killed" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows_killed]
    # Never from the partial step 4: from step 2's checkpoint, or from scratch when Ray had not registered that one
    # yet (a report waits in the worker for the controller's next poll; the kill loses it: seen on a loaded box).
    assert steps[:4] == [1, 2, 3, 4] and steps[4:] in ([3, 4], [1, 2, 3, 4]), steps
    import torch

    # the uninterrupted run's step 4 (the tolerance of test_worker_failure_resumes_to_the_same_loss)
    torch.testing.assert_close(rows_killed[-1]["loss"], rows[3]["loss"], rtol=1e-4, atol=1e-5)
    assert len(killed.folders) >= 3 and "trainer_state_rank0.json" in complete  # step 2, the cut step 4, the step 4 of the retry


def _kill_worker_at_second_checkpoint(env: dict, prefix: str):
    """A request hook: at the first object written into the run's second checkpoint folder, SIGKILL the Ray Train
    worker that uploads it (this job's: found by its RayTrainWorker title and our endpoint in its environment)."""
    import signal

    import psutil

    def hook(method: str, path: str) -> None:
        marker = f"/{BUCKET}/{prefix}checkpoint_"
        if method not in ("PUT", "POST") or not path.startswith(marker):
            return
        folder, slash, _ = path[len(f"/{BUCKET}/{prefix}"):].partition("/")
        if not slash:  # a file beside the folders (Ray's checkpoint_manager_snapshot.json), not in one
            return
        if folder not in hook.folders:
            hook.folders.append(folder)
        if len(hook.folders) < 2 or hook.pids:
            return
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if "RayTrainWorker" in " ".join(p.info["cmdline"] or []) and \
                        p.environ().get("AWS_ENDPOINT_URL") == env["AWS_ENDPOINT_URL"]:
                    os.kill(p.pid, signal.SIGKILL)
                    hook.pids.append(p.pid)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass

    hook.folders, hook.pids = [], []
    return hook


def test_listings_page_past_a_thousand_objects(s3, monkeypatch):
    """S3 lists 1,000 keys per page: folders and globs with more objects are listed whole, in order."""
    from tokenization import storage
    from tokenization.paths import list_input_files

    client, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    keys = [f"many/part-{i:05d}.tar" for i in range(1203)]
    for key in keys:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    client.put_object(Bucket=BUCKET, Key="many/notes.txt", Body=b"x")
    want = [f"s3://{BUCKET}/{k}" for k in keys]
    assert [f.uri for f in list_input_files(f"s3://{BUCKET}/many", (".tar",))] == want
    assert [f.uri for f in list_input_files(f"s3://{BUCKET}/many/part-*.tar", (".tar",))] == want
    assert storage.list_files(f"s3://{BUCKET}/many", ".tar") == want


def test_incremental_runs_on_s3_retire_objects_and_match_a_fresh_run(monkeypatch):
    """The engine's grow / change / remove on S3 (no folders, no rename): the retired unit's objects are deleted
    and the prefix holds exactly what a fresh run over today's input writes."""
    from tests.s3_server import moto_s3
    from tests.tokenization.test_engine import _corpus, _run_into

    with moto_s3("living") as (client, env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        _run_into("s3://living/out", {"b": ("v1", ["b0", "b1", "b2", "b3"]), "d": ("v1", ["d0", "bad", "d2"])})
        today = {"a": ("v1", ["a0", "a1"]), "b": ("v2", ["B0"])}  # a new, b re-uploaded, d gone
        plan, written, _ = _run_into("s3://living/out", today)
        assert plan.counts() == {"units_new": 1, "units_changed": 1, "units_removed": 1, "units_unchanged": 0}
        _run_into("s3://living/fresh", today)

        def objects(prefix: str) -> dict[str, bytes]:
            keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="living", Prefix=prefix)
                    for o in page.get("Contents", [])]
            # pyarrow's delete_file leaves an empty `folder/` marker object (apache/arrow#36275): no file to readers
            return {k[len(prefix):]: client.get_object(Bucket="living", Key=k)["Body"].read()
                    for k in keys if not k[len(prefix):].startswith("_progress") and not k.endswith("/")}

        assert objects("out/") == objects("fresh/") and len(objects("out/")) > 3
        gone = _corpus({"d": ("v1", [])})[0][0].key
        assert not [k for page in client.get_paginator("list_objects_v2").paginate(Bucket="living", Prefix="out/")
                    for o in page.get("Contents", []) for k in [o["Key"]] if gone in k]
