"""The audit's scan in pieces: mergeable summaries past their exact range, and keyed checks whatever the hash parts.

No Ray, no codec: the Ray scan itself is checked against the in-process one in test_audit.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from filtering.audit.lint import LintConfig
from filtering.audit.partial import ScanSpec, lint_results, merge_parts, reduce_part, scan_file
from filtering.audit.read import data_files
from filtering.audit.sketch import EXACT, Moments, Sketch, summary
from tests.filtering.test_lint import bad_duplicate_audio, bad_duplicate_text, bad_text_leakage, clean_tokens, write_tokens


def test_sketch_is_exact_then_within_its_bucket_error():
    rng = np.random.default_rng(0)
    small = rng.lognormal(0.5, 0.6, 1000)
    assert Sketch.of(small[:400]).merge(Sketch.of(small[400:])).summary() == summary(small)  # numpy's own figures
    big = rng.lognormal(0.5, 0.6, 3 * EXACT)
    chunks = np.array_split(big, 7)
    s = Sketch()
    for c in chunks:
        s.merge(Sketch.of(c))
    assert s.exact is None and s.n == len(big)
    exact, got = summary(big), s.summary()
    assert got["min"] == exact["min"] and got["max"] == exact["max"] and got["mean"] == pytest.approx(exact["mean"], abs=1e-3)
    for p in ("p5", "p25", "p50", "p75", "p90", "p95", "p99"):
        assert got[p] == pytest.approx(exact[p], rel=3e-3), p
    other = Sketch.of(big[: EXACT // 2]).merge(Sketch.of(big[EXACT // 2:]))  # split elsewhere: the same buckets
    assert other.summary() == got
    assert Sketch().merge(s).summary() == got  # into an empty sketch (the plots merge per-series sketches so)


def test_moments_merge_to_numpy_pearson():
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000)
    y = 0.3 * x + rng.normal(size=5000)
    m = Moments.of(np.c_[x[:123], y[:123]]).merge(Moments.of(np.c_[x[123:], y[123:]]))
    assert m.n == 5000 and m.pearson() == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-4)
    assert Moments.of(np.c_[x, np.ones_like(x)]).pearson() is None  # no spread in y: no r


def test_keyed_checks_do_not_depend_on_the_hash_parts(tmp_path):
    """Duplicate and leakage groups split over 1 or 5 parts, and the rows over 3 files: the same lint."""
    import pyarrow.parquet as pq

    rows = bad_text_leakage(bad_duplicate_text(bad_duplicate_audio(clean_tokens())))
    folder = write_tokens(tmp_path / "tok", rows)
    one = folder / "shards" / "shard-00000.parquet"
    t = pq.read_table(one)
    for k, (lo, hi) in enumerate(((0, 4), (4, 11), (11, t.num_rows))):  # the duplicate pair (rows 3, 5) across files
        pq.write_table(t.slice(lo, hi - lo), folder / "shards" / f"shard-{k + 1:05d}.parquet")
    one.unlink()
    files = data_files(str(folder), "tokenize")
    assert len(files) == 3
    results = []
    for parts in (1, 5):
        spec = ScanSpec("tokenize", None, LintConfig(), parts)
        merged, keyed = None, [[] for _ in range(parts)]
        for i, (status, path) in enumerate(files):
            p, k = scan_file(spec, i, status, path)
            merged = p if merged is None else merged.merge(p)
            for j, tables in enumerate(k):
                keyed[j].append(tables)
        results.append([r.to_dict() for r in lint_results(merged, merge_parts([reduce_part(*ts) for ts in keyed]), spec.lint_cfg)])
    assert results[0] == results[1]
    failed = {r["name"]: r for r in results[0] if not r["passed"]}
    assert set(failed) == {"duplicate_audio", "duplicate_text", "text_leakage"}
    assert failed["duplicate_audio"]["examples"][0]["ids"] == ["u003", "u005"]  # in file order across files
