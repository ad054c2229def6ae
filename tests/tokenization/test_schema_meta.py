import json

import numpy as np
import pyarrow.parquet as pq

from filtering.audit import collect
from filtering.audit.partial import lint
from tokenization.codec import CodecInfo
from tokenization.schema import SCHEMA_VERSION, TokenRow, file_metadata, read_file_metadata, rows_to_table, token_schema
from tokenization.units import AudioRef, Utterance
from training.data.sources import TokenShardSource

INFO = CodecInfo(name="test", version="0", checkpoint_id="none", sample_rate=24_000, frame_rate=12.5, n_codebooks=8, codebook_size=2048)


def _rows() -> list[TokenRow]:
    rows = []
    for i in range(6):
        utt = Utterance(f"u{i}", f"the clip number {i} here", AudioRef(data=b"x"), f"spk{i % 2}", "emilia", "en",
                        meta={"dnsmos": 3.0 + i / 10, "wav": f"u{i}.mp3"} if i % 3 else None)
        rows.append(TokenRow.from_utterance(utt, np.full((25, 8), i, np.uint16), 2.0, f"{i:040x}", "run"))
    return rows


def _write(folder, table) -> None:
    (folder / "shards").mkdir(parents=True)
    pq.write_table(table.replace_schema_metadata(file_metadata(INFO)), folder / "shards" / "shard-00000.parquet")


def test_meta_column_holds_the_utterance_meta_as_json(tmp_path):
    table = rows_to_table(_rows())
    assert table.schema == token_schema() and SCHEMA_VERSION == "4"
    metas = table.column("meta").to_pylist()
    assert metas[0] is None and metas[3] is None and json.loads(metas[1]) == {"dnsmos": 3.1, "wav": "u1.mp3"}
    assert metas[1] == '{"dnsmos":3.1,"wav":"u1.mp3"}'  # stable JSON: same row -> same bytes
    _write(tmp_path / "new", table)
    assert read_file_metadata(str(tmp_path / "new/shards/shard-00000.parquet"))["schema_version"] == "4"


def test_shards_written_before_the_meta_column_still_open(tmp_path):
    """Training readers and the audit read only the columns they need, so schema-2 shards keep working."""
    old = rows_to_table(_rows()).drop_columns(["meta"])
    _write(tmp_path / "old", old)
    _write(tmp_path / "new", rows_to_table(_rows()))
    for folder in ("old", "new"):
        uri = str(tmp_path / folder)
        source = TokenShardSource(uri + "/shards", split=None)
        examples = [e for u in source.units for r in source.read(u, None) for e in source.examples(r)]
        assert sorted(e["id"] for e in examples) == [f"u{i}" for i in range(6)]
        assert collect(uri)["duration"]["by_speaker"]["spk1"]["n"] == 3
        assert len(lint(uri)) > 0
