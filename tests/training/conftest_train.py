"""Fixtures for the training tests: token shards and dialogue shards built from the espeak-ng sample.

Import from a test module: `from tests.training.conftest_train import *  # noqa: F401,F403`.
Both are built through the shard contract: token shards from `tokenization.schema.TokenRow`
(what `pipelines.tokenize` writes), dialogue shards from `tokenization.dialogue_schema.DialogueRow`
(what the filter job writes to `kept/`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tokenization.audio import WHISPER_SAMPLE_RATE
from tokenization.audio import load_audio
from tokenization.dialogue_schema import ASSISTANT, USER, DialogueRow, DialogueTurn, dialogue_rows_to_table, pcm_to_flac
from tokenization.schema import PARQUET_COMPRESSION, TokenRow, file_metadata, rows_to_table, sha1_hex

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _manifest_rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def write_token_shards(manifest: Path, codec, out_dir: Path, n: int | None = None, rows_per_group: int = 6, n_files: int = 1,
                       n_valid: int = 0) -> Path:
    """Encode the sample's utterances with `codec` into token shards under `out_dir`.

    `n_valid` more utterances (after the first `n`) get `split=valid`, one appended to each
    row group in turn, so the train rows of every row group stay what they are without them.
    """
    items = _manifest_rows(manifest)[:(n + n_valid) if n is not None else None]
    waves = [load_audio(str(manifest.parent / it["audio_path"]), codec.sample_rate) for it in items]
    codes = codec.encode(waves)
    rows = [
        TokenRow(it["id"], it["source"], it["speaker"], it["language"], it["text"], len(w) / codec.sample_rate,
                 len(c), c, sha1_hex(w.tobytes()), "test")
        for it, w, c in zip(items, waves, codes)
    ]
    if n_valid:
        train, valid = rows[:n], rows[n:]
        groups = [train[i:i + rows_per_group] for i in range(0, len(train), rows_per_group)]
        assert n_files == 1 and len(valid) % len(groups) == 0, "valid rows must spread evenly over the row groups"
        for k, row in enumerate(valid):
            row.split = "valid"
            groups[k % len(groups)].append(row)
        rows, rows_per_group = [r for g in groups for r in g], len(groups[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(rows) // n_files)
    for f in range(n_files):
        table = rows_to_table(rows[f * per_file:(f + 1) * per_file])
        table = table.replace_schema_metadata(file_metadata(codec.info))
        pq.write_table(table, out_dir / f"shard-{f:05d}.parquet", row_group_size=rows_per_group, compression=PARQUET_COMPRESSION)
    return out_dir


def synthetic_token_shards(folder: Path, splits: list[str], frames: int | list[int] = 25, prefix: str = "u", codec_info=None,
                           row_group_size: int = 2) -> Path:
    """A token shard through the shard contract without audio: one all-zero row per split entry, ids `<prefix><i>`.

    `frames`: every row's length, or one per row. `codec_info` (a `CodecInfo`) writes its file
    metadata, as the tokenize job does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lengths = frames if isinstance(frames, list) else [frames] * len(splits)
    rows = [TokenRow(f"{prefix}{i}", "test", f"spk{i}", "en", "a few words", n / 12.5, n,
                     np.zeros((n, 8), np.uint16), "0" * 40, "test", split) for i, (split, n) in enumerate(zip(splits, lengths))]
    table = rows_to_table(rows)
    if codec_info is not None:
        table = table.replace_schema_metadata(file_metadata(codec_info))
    pq.write_table(table, folder / "shard-00000.parquet", row_group_size=row_group_size, compression=PARQUET_COMPRESSION)
    return folder


def write_dialogue_shards(manifest: Path, codec, out_dir: Path, n_dialogues: int = 12, rows_per_group: int = 4,
                          drop: tuple[str, ...] = ()) -> Path:
    """Dialogues of two turns: user = sentence i spoken, assistant = sentence i+1 (text + codes).

    `drop` leaves columns out, as in shards written before them (e.g. `split`).
    """
    items = _manifest_rows(manifest)
    user_rate = WHISPER_SAMPLE_RATE
    rows = []
    for d in range(n_dialogues):
        user, reply = items[(2 * d) % len(items)], items[(2 * d + 1) % len(items)]
        user_wave = load_audio(str(manifest.parent / user["audio_path"]), user_rate)
        reply_wave = load_audio(str(manifest.parent / reply["audio_path"]), codec.sample_rate)
        reply_codes = codec.encode([reply_wave])[0]
        turns = [
            DialogueTurn(USER, user["text"], pcm_to_flac(user_wave, user_rate), user_rate, len(user_wave) / user_rate,
                         asr_hyp=user["text"], wer=0.0),
            DialogueTurn(ASSISTANT, reply["text"], None, codec.sample_rate, len(reply_wave) / codec.sample_rate,
                         reply_codes, len(reply_codes), asr_hyp=reply["text"], wer=0.0),
        ]
        rows.append(DialogueRow(f"dlg_{d:03d}", "espeak-dialogue", "en", user["speaker"], turns, keep=True, run_id="test"))
    out_dir.mkdir(parents=True, exist_ok=True)
    table = dialogue_rows_to_table(rows, codec.info.n_codebooks).drop_columns(list(drop))
    table = table.replace_schema_metadata(file_metadata(codec.info))
    pq.write_table(table, out_dir / "part-00000.parquet", row_group_size=rows_per_group, compression=PARQUET_COMPRESSION)
    return out_dir


@pytest.fixture(scope="session")
def token_shards(tts_sample, tiny_codec, tmp_path_factory) -> Path:
    """All 36 sample utterances as token shards: 2 files, row groups of 6."""
    return write_token_shards(tts_sample, tiny_codec, tmp_path_factory.mktemp("token_shards"), n_files=2)


@pytest.fixture(scope="session")
def handful_token_shards(tts_sample, tiny_codec, tmp_path_factory) -> Path:
    """A handful (8) of train utterances, for the overfitting test, plus 2 valid ones for `val_loss`."""
    return write_token_shards(tts_sample, tiny_codec, tmp_path_factory.mktemp("handful_shards"), n=8, rows_per_group=4, n_valid=2)


@pytest.fixture(scope="session")
def dialogue_shards(tts_sample, tiny_codec, tmp_path_factory) -> Path:
    return write_dialogue_shards(tts_sample, tiny_codec, tmp_path_factory.mktemp("dialogue_shards"))



@pytest.fixture(scope="module")
def ray_two_nodes():
    """A local 2-node Ray cluster (head + one more node, 1 CPU each): one training worker lands on each.

    Module-scoped, so other test modules that start their own Ray find none running.
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a Ray session left by another module would take our workers
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def tiny_config(stage: int, data: Path | None, storage: Path, overrides: list[str] = ()):
    """A stage's tiny YAML pointed at test data (None: a `data.sources` override names it) and storage (+ overrides)."""
    from training.stage_config import CONFIG_DIR, load_config

    base = ([f"data.path={data}"] if data else []) + [f"checkpoint.storage_path={storage}", "checkpoint.init_from=[]"]
    return load_config(os.path.join(CONFIG_DIR, f"stage{stage}_tiny.yaml"), base + list(overrides), stage=stage)


def first_user_audio(dialogue_dir: Path) -> np.ndarray:
    """The first dialogue's user turn as float32 samples at the Whisper rate (16 kHz)."""
    from training.data.sources import DialogueSource

    source = DialogueSource(str(dialogue_dir), with_codes=False)
    row = pq.read_table(source.units[0].path).slice(0, 1).to_pylist()[0]
    return next(source.examples(row))["user_audio"]
