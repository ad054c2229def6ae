"""Corpora in shipped layouts (tests/corpora.py), built once per session from espeak-ng speech."""

from __future__ import annotations

import pytest

from tests import corpora


@pytest.fixture(scope="session")
def speech_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def webdataset_corpus(tmp_path_factory, speech_cache) -> corpora.Corpus:
    return corpora.make_webdataset(tmp_path_factory.mktemp("emilia") / "EN", speech_cache)


@pytest.fixture(scope="session")
def hf_corpus(tmp_path_factory, speech_cache) -> corpora.Corpus:
    return corpora.make_hf_parquet(tmp_path_factory.mktemp("hf"), speech_cache)


@pytest.fixture(scope="session")
def cuts_corpus(tmp_path_factory, speech_cache) -> corpora.Corpus:
    return corpora.make_lhotse_cuts(tmp_path_factory.mktemp("libriheavy"), speech_cache)


@pytest.fixture(scope="session")
def span_corpus(tmp_path_factory, speech_cache) -> corpora.Corpus:
    return corpora.make_span_manifest(tmp_path_factory.mktemp("segments"), speech_cache)
