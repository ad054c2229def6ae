"""`ray job submit` on a real two-node Ray cluster (head + worker started with `ray start` on 127.0.0.1).

Token authentication on (Ray's job API default), a private HOME and temp dir, free ports. Three
jobs share the cluster, each submitted with the worktree as `--working-dir` and the shipped
`clusters/runtime_env.yaml`: tokenize the espeak sample, filter the espeak dialogues with the
real Whisper tiny.en, then a few steps of training stage 1 on the tokenize job's shards. Each
job's work must show up on both nodes (Ray's state API: the node of every task of the job).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.ops.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
N_UTTERANCES = 12
N_UNITS = 4  # byte ranges of the tokenize job's manifest
STEP_CALLS = "MapBatches(_StepActor)).submit"  # a batch through a job step's actor (encode, ASR, quality)
# Ray Data hands blocks to the actors that are up: a job this small would be done by the first encoder before
# the other node's had loaded. Users of small jobs on big clusters set the same Ray knob.
WAIT_FOR_ACTORS = ("env", "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S=300")


@pytest.fixture(scope="module")
def cluster():
    """Head (2 CPUs) + one worker node (2 CPUs, custom resource `worker_node`); stopped by PID at the end."""
    c = LocalRayCluster.start(num_cpus=2)
    try:
        c.add_node(num_cpus=2, resources={"worker_node": 1})
        yield c
    finally:
        c.stop()
    assert not c.leftover_processes(), "processes of the test cluster survived its stop"


@pytest.fixture(scope="module")
def node_ids(cluster) -> dict[str, str]:
    """{"head": node id, "worker": node id}, told apart by the worker's custom resource."""
    nodes = cluster.list_state("nodes")
    # Ray reports this machine's routable IP even for --node-ip-address 127.0.0.1 (resolve_ip_for_localhost).
    assert len(nodes) == 2 and sum(n["is_head_node"] for n in nodes) == 1, nodes
    by_role = {("worker" if "worker_node" in n["resources_total"] else "head"): n["node_id"] for n in nodes}
    assert set(by_role) == {"head", "worker"}, nodes
    return by_role


def submit(cluster: LocalRayCluster, submission_id: str, *entrypoint: str) -> dict:
    """`ray job submit` from the repo root; waits for the job, checks SUCCEEDED, returns its JSON summary line."""
    proc = cluster.ray("job", "submit", "--address", cluster.dashboard_url, "--submission-id", submission_id,
                       "--working-dir", ".", "--runtime-env", "clusters/runtime_env.yaml", "--", *entrypoint,
                       cwd=ROOT, timeout=600, check=False)
    [job] = cluster.list_state("jobs", f"submission_id={submission_id}")
    assert job["status"] == "SUCCEEDED", f"{submission_id}: {job['status']} {job.get('message')}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {**job, "summary": summaries[-1] if summaries else None, "log": proc.stdout}


def job_nodes(cluster: LocalRayCluster, job_id: str, want: set[str], name: str = "", timeout: float = 60) -> set[str]:
    """Nodes that ran the job's tasks and actor tasks whose name contains `name` (task events reach the GCS
    with a short delay)."""
    deadline = time.time() + timeout
    while True:
        nodes = {t["node_id"] for t in cluster.list_state("tasks", f"job_id={job_id}")
                 if t.get("node_id") and name in (t.get("name") or "")}
        if want <= nodes or time.time() > deadline:
            return nodes
        time.sleep(2)


@pytest.fixture(scope="module")
def tts_manifest(tts_sample, tmp_path_factory) -> Path:
    """The first N_UTTERANCES of the espeak sample (absolute paths) plus one unreadable file."""
    root = tmp_path_factory.mktemp("submit_tts")
    rows = [json.loads(line) for line in tts_sample.read_text().splitlines()][:N_UTTERANCES]
    for r in rows:
        r["audio_path"] = str(tts_sample.parent / r["audio_path"])
    (root / "broken.wav").write_bytes(b"RIFF not really audio")
    rows.insert(5, {"id": "broken_1", "audio_path": str(root / "broken.wav"), "text": "never heard", "speaker": "spk_x"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.fixture(scope="module")
def tokenize_job(cluster, node_ids, tts_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("submit_tokens") / "tokens"
    # One encoder per node: 1.5 of each node's 2 CPUs, so Ray cannot put both on one node. The manifest is read
    # in 4 byte ranges (units), so reads run on both nodes as a big corpus's do, and Ray Data hands each node's
    # blocks to its own encoder.
    unit_bytes = tts_manifest.stat().st_size // N_UNITS + 1
    job = submit(cluster, "tokenize-espeak", *WAIT_FOR_ACTORS, "python", "-m", "pipelines.tokenize",
                 "--input", str(tts_manifest), "--unit-bytes", str(unit_bytes), "--output", str(out), "--codec", "tiny",
                 "--rows-per-shard", "4", "--batch-size", "2", "--encoders", "2", "--encoder-cpus", "1.5")
    return out, job


def test_tokenize_job_writes_shards_and_manifest(tokenize_job):
    out, job = tokenize_job
    manifest = json.loads((out / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert (counts["in"], counts["kept"], counts["quarantined"]) == (N_UTTERANCES + 1, N_UTTERANCES, 1)
    assert job["summary"]["kept"] == N_UTTERANCES and job["summary"]["rows_in"] == N_UTTERANCES + 1
    files = sorted(p.relative_to(out).as_posix() for p in (out / "shards").glob("*.parquet"))
    assert files == sorted(s["path"] for s in manifest["shards"])
    assert job["summary"]["units_new"] == N_UNITS and all(s["rows"] <= 4 for s in manifest["shards"])
    total = 0
    for shard in manifest["shards"]:
        table = pq.read_table(out / shard["path"])
        assert table.num_rows == shard["rows"]
        assert all(len(codes) == n and len(codes[0]) == 8 for codes, n in
                   zip(table.column("codes").to_pylist(), table.column("n_frames").to_pylist()))
        total += table.num_rows
    assert total == N_UTTERANCES
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    assert [q["utt_id"] for q in quarantine] == ["broken_1"] and "broken.wav" in quarantine[0]["reason"] + quarantine[0]["file"]


def test_tokenize_work_ran_on_both_nodes(cluster, node_ids, tokenize_job):
    """Both encoders encoded batches (the calls of Ray Data's map workers of the encode step), not just any task."""
    _, job = tokenize_job
    want = set(node_ids.values())
    assert job_nodes(cluster, job["job_id"], want, name=STEP_CALLS) >= want


def test_job_ran_with_the_uploaded_working_dir_and_shipped_runtime_env(tokenize_job):
    """`--working-dir .` became a package in the cluster's GCS; clusters/runtime_env.yaml's env vars came along."""
    import yaml

    _, job = tokenize_job
    runtime_env = job["runtime_env"]
    assert runtime_env["working_dir"].startswith("gcs://_ray_pkg_"), runtime_env
    shipped = yaml.safe_load((ROOT / "clusters" / "runtime_env.yaml").read_text())
    assert runtime_env["env_vars"] == shipped["env_vars"]


@pytest.fixture(scope="module")
def dialogue_manifest(tmp_path_factory) -> Path:
    from filtering.sample_dialogues import make_dialogue_sample

    return make_dialogue_sample(tmp_path_factory.mktemp("submit_dialogues"))


@pytest.fixture(scope="module")
def filter_job(cluster, node_ids, dialogue_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("submit_filter") / "filtered"
    # One ASR actor per node (1.5 CPUs each on 2-CPU nodes).
    job = submit(cluster, "filter-dialogues", *WAIT_FOR_ACTORS, "python", "-m", "pipelines.filter", "--input", str(dialogue_manifest),
                 "--output", str(out), "--asr", "tiny.en", "--codec", "tiny", "--rows-per-shard", "8",
                 "--asr-actors", "2", "--asr-cpus", "1.5")
    return out, job


def test_filter_job_keeps_and_rejects_what_the_sample_expects(filter_job):
    from filtering.sample_dialogues import expected_outcomes

    out, job = filter_job
    expected = expected_outcomes()
    want = {k: sum(v == k for v in expected.values()) for k in ("keep", "reject", "quarantine")}
    counts = json.loads((out / "_manifest.json").read_text())["counts"]
    assert (counts["in"], counts["kept"], counts["rejected"], counts["quarantined"]) == \
        (len(expected), want["keep"], want["reject"], want["quarantine"])
    kept = pq.read_table(out / "kept").column("dialogue_id").to_pylist()
    assert sorted(kept) == sorted(k for k, v in expected.items() if v == "keep")
    assert job["summary"]["kept"] == want["keep"]


def test_filter_work_ran_on_both_nodes(cluster, node_ids, filter_job):
    _, job = filter_job
    want = set(node_ids.values())
    assert job_nodes(cluster, job["job_id"], want, name=STEP_CALLS) >= want


@pytest.fixture(scope="module")
def train_job(cluster, tokenize_job, tmp_path_factory):
    tokens, _ = tokenize_job
    storage = tmp_path_factory.mktemp("submit_train")
    job = submit(cluster, "train-stage1", "python", "-m", "pipelines.train", "--stage", "1",
                 "--config", "training/configs/stage1_tiny.yaml", f"data.path={tokens}/shards",
                 f"checkpoint.storage_path={storage}", "max_steps=4", "checkpoint.every_steps=4",
                 "data.micro_batch_size=2", "data.buffer_size=4", "scaling.placement_strategy=STRICT_SPREAD")
    return storage, job


def test_train_stage1_on_the_tokenize_shards(train_job, node_ids):
    storage, job = train_job
    logs = storage / "stage1" / "tensorboard"
    steps = [json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    assert (storage / "stage1" / "export" / "model.safetensors").is_file()
    placement = json.loads((logs / "placement.json").read_text())
    assert sorted(placement["nodes_by_rank"]) == sorted(node_ids.values())  # one training worker per node
    assert "exported model" in job["log"]
