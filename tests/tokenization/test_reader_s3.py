"""The same readers over S3 (a moto server): globbed tars streamed, Parquet row groups, cut spans by ranged reads."""

from __future__ import annotations

import pytest

from tests.corpora import upload_tree
from tests.s3_server import moto_s3
from tests.tokenization.readers_util import assert_matches, run_reader
from tokenization.units import ReaderOptions

BUCKET = "corpora"


@pytest.fixture(scope="module")
def s3_client():
    with moto_s3(BUCKET) as (client, env):
        yield client, env


@pytest.fixture
def s3(s3_client, monkeypatch):
    client, env = s3_client
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return client


def test_webdataset_glob_over_s3(s3, webdataset_corpus):
    uri = upload_tree(s3, BUCKET, webdataset_corpus.input, "Emilia/EN")
    out = run_reader(f"{uri}/*.tar", "webdataset")
    assert [u.uri for u in out.units] == [f"{uri}/EN-B00000{i}.tar" for i in range(3)]
    assert_matches(out, webdataset_corpus)


def test_hf_parquet_over_s3(s3, hf_corpus):
    uri = upload_tree(s3, BUCKET, hf_corpus.input, "hf/data")
    assert_matches(run_reader(uri, "hf"), hf_corpus)


def test_lhotse_spans_over_s3(s3, cuts_corpus):
    uri = upload_tree(s3, BUCKET, cuts_corpus.input.parent, "libriheavy")
    out = run_reader(f"{uri}/cuts.jsonl", "lhotse", ReaderOptions(unit_bytes=700))
    assert len(out.units) > 2
    assert_matches(out, cuts_corpus)
    assert out.kept["cut0"].audio.path == f"{uri}/recordings/long.flac"
    for cut_id, seconds in cuts_corpus.durations.items():
        assert out.seconds[cut_id] == pytest.approx(seconds, abs=1e-3)
