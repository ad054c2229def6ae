"""Mergeable summaries: what a shard's scan returns instead of its rows, so the driver's memory stays flat.

Each is built from one shard's values and merged with the others' in shard order:

    Sketch    `summary()` (n, mean, min, max, percentiles) of a stream of numbers: the values themselves up to
              `EXACT` of them (percentiles exactly as numpy's), then log-spaced buckets of relative width
              `GAMMA - 1` (DDSketch: percentiles within 0.25 % of the value; n, mean, min and max stay exact)
    Curve     kept rows and seconds per threshold of a what-if curve
    Moments   Pearson r of (x, y) pairs (Chan's parallel update of the co-moments)
    sample    the `k` items of smallest CRC-32 of their id: a deterministic, mergeable sample for scatter plots

    >>> s = Sketch.of([1.0, 2.0, None]); s.merge(Sketch.of([3.0])); s.summary()["p50"]
    2.0
"""

from __future__ import annotations

import heapq
import math
import zlib
from dataclasses import dataclass

import numpy as np

PERCENTILES = (5, 25, 50, 75, 90, 95, 99)
EXACT = 20_000  # values kept as they are (per sketch); beyond, buckets
GAMMA = 1.005  # bucket i holds (GAMMA^(i-1), GAMMA^i]: relative error (GAMMA - 1) / 2
_ZERO = 1e-12  # |x| below this counts as 0
_OFFSET = 6_000  # > -log(_ZERO) / log(GAMMA): bucket keys of positive values stay > 0, of negatives < 0
N_SAMPLE = 4_000  # points per scatter plot


def clean(values) -> np.ndarray:
    """float64 array of the values that are neither None nor NaN."""
    a = np.asarray([v for v in values if v is not None], np.float64)
    return a[~np.isnan(a)] if a.size else a


def summary(values) -> dict:
    a = clean(values)
    if a.size == 0:
        return {"n": 0}
    out = {"n": int(a.size), "mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}
    out.update({f"p{p}": round(float(np.percentile(a, p)), 4) for p in PERCENTILES})
    return out


def _keys(a: np.ndarray) -> np.ndarray:
    mag = np.abs(a)
    k = np.ceil(np.log(np.maximum(mag, _ZERO)) / math.log(GAMMA)).astype(np.int64) + _OFFSET
    return np.where(mag < _ZERO, 0, np.sign(a).astype(np.int64) * k)


def _value(key: int) -> float:
    """The bucket's representative: the middle of (GAMMA^(k-1), GAMMA^k] in relative terms."""
    if key == 0:
        return 0.0
    k = abs(key) - _OFFSET
    return math.copysign(2 * GAMMA ** k / (GAMMA + 1), key)


class Sketch:
    """n, sum, min, max and the values (or their buckets) of a stream of numbers; None and NaN are skipped."""

    __slots__ = ("n", "total", "lo", "hi", "exact", "buckets")

    def __init__(self):
        self.n, self.total, self.lo, self.hi = 0, 0.0, math.inf, -math.inf
        self.exact: list[np.ndarray] | None = []
        self.buckets: dict[int, int] | None = None

    @classmethod
    def of(cls, values) -> "Sketch":
        s = cls()
        s.add(clean(values))
        return s

    def add(self, a: np.ndarray) -> None:
        """Add an array of clean values (no None, no NaN)."""
        if a.size == 0:
            return
        self.n += int(a.size)
        self.total += float(a.sum())
        self.lo, self.hi = min(self.lo, float(a.min())), max(self.hi, float(a.max()))
        if self.exact is not None:
            self.exact.append(a)
            if self.n > EXACT:
                self._to_buckets()
        else:
            self._count(a)

    def _count(self, a: np.ndarray) -> None:
        keys, counts = np.unique(_keys(a), return_counts=True)
        for k, c in zip(keys.tolist(), counts.tolist()):
            self.buckets[k] = self.buckets.get(k, 0) + c

    def _to_buckets(self) -> None:
        values, self.exact, self.buckets = np.concatenate(self.exact) if self.exact else np.zeros(0), None, {}
        self._count(values)

    def merge(self, other: "Sketch") -> "Sketch":
        if other.n == 0:
            return self
        if other.exact is not None:
            n, total, lo, hi = self.n, self.total, self.lo, self.hi
            self.add(np.concatenate(other.exact))
            self.n, self.total = n + other.n, total + other.total  # the other's own sum, whatever the path
            self.lo, self.hi = min(lo, other.lo), max(hi, other.hi)
            return self
        if self.exact is not None:
            self._to_buckets()
        self.n, self.total = self.n + other.n, self.total + other.total
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        for k, c in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + c
        return self

    def summary(self) -> dict:
        if self.exact is not None:
            return summary(np.concatenate(self.exact) if self.exact else [])
        keys = sorted(self.buckets)
        cum = np.cumsum([self.buckets[k] for k in keys])

        def at(rank: int) -> float:  # the rank-th smallest value (0-based), as its bucket's representative
            return min(max(_value(keys[int(np.searchsorted(cum, rank, side="right"))]), self.lo), self.hi)

        out = {"n": self.n, "mean": round(self.total / self.n, 4), "min": round(self.lo, 4), "max": round(self.hi, 4)}
        for p in PERCENTILES:  # numpy's linear interpolation between the two nearest ranks
            r = p / 100 * (self.n - 1)
            lo, frac = int(math.floor(r)), r - math.floor(r)
            v = at(lo) if frac == 0 else at(lo) + frac * (at(lo + 1) - at(lo))
            out[f"p{p}"] = round(v, 4)
        return out

    def hist(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, weights) to draw a histogram with: the values, or the buckets' representatives and counts."""
        if self.exact is not None:
            v = np.concatenate(self.exact) if self.exact else np.zeros(0)
            return v, np.ones(len(v))
        keys = sorted(self.buckets)
        return np.clip([_value(k) for k in keys], self.lo, self.hi), np.asarray([self.buckets[k] for k in keys], float)

    def quantile(self, q: float) -> float:
        """q-th percentile (0-100) of the values (bucketed: within the buckets' relative error)."""
        if self.exact is not None:
            return float(np.percentile(np.concatenate(self.exact), q))
        return self.summary()[f"p{int(q)}"] if int(q) in PERCENTILES else float("nan")


def merge_dict(a: dict[str, Sketch], b: dict[str, Sketch]) -> dict[str, Sketch]:
    for k, s in b.items():
        a[k] = a[k].merge(s) if k in a else s
    return a


class Moments:
    """Count, means and co-moments of (x, y) pairs; `pearson()` as numpy's corrcoef."""

    __slots__ = ("n", "mx", "my", "sxx", "syy", "sxy")

    def __init__(self):
        self.n, self.mx, self.my, self.sxx, self.syy, self.sxy = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    @classmethod
    def of(cls, pairs) -> "Moments":
        m = cls()
        p = np.asarray(pairs, np.float64).reshape(-1, 2)
        if len(p):
            m.n, m.mx, m.my = len(p), float(p[:, 0].mean()), float(p[:, 1].mean())
            dx, dy = p[:, 0] - m.mx, p[:, 1] - m.my
            m.sxx, m.syy, m.sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        return m

    def merge(self, o: "Moments") -> "Moments":
        if o.n == 0:
            return self
        if self.n == 0:
            return o
        n = self.n + o.n
        dx, dy = o.mx - self.mx, o.my - self.my
        f = self.n * o.n / n
        self.sxx += o.sxx + dx * dx * f
        self.syy += o.syy + dy * dy * f
        self.sxy += o.sxy + dx * dy * f
        self.mx += dx * o.n / n
        self.my += dy * o.n / n
        self.n = n
        return self

    def pearson(self) -> float | None:
        if self.n > 2 and self.sxx > 1e-12 * self.n and self.syy > 1e-12 * self.n:
            return round(self.sxy / math.sqrt(self.sxx * self.syy), 4)
        return None


def sample_of(items, k: int = N_SAMPLE) -> list[tuple]:
    """[(priority, id, payload)] of the `k` (id, payload) items of smallest CRC-32 id."""
    return heapq.nsmallest(k, ((zlib.crc32(str(i).encode()), str(i), p) for i, p in items))


def merge_sample(a: list[tuple], b: list[tuple], k: int = N_SAMPLE) -> list[tuple]:
    return heapq.nsmallest(k, a + b)


def _add(a: list, b: list) -> list:
    return [x + y for x, y in zip(a, b)]


@dataclass
class Curve:
    """What-if counts: kept rows and seconds per threshold (`kept`, `sec`), plus rows kept at any threshold (`base`)."""

    kept: list
    sec: list
    base_rows: int = 0
    base_s: float = 0.0

    @classmethod
    def empty(cls, n: int) -> "Curve":
        return cls([0] * n, [0.0] * n)

    def merge(self, o: "Curve") -> "Curve":
        return Curve(_add(self.kept, o.kept), _add(self.sec, o.sec), self.base_rows + o.base_rows, self.base_s + o.base_s)

    def rows(self, thresholds: list, name: str) -> list[dict]:
        return [{name: t, "kept": k + self.base_rows, "hours_kept": round((s + self.base_s) / 3600, 6)}
                for t, k, s in zip(thresholds, self.kept, self.sec)]


def curve_of(values: np.ndarray, seconds: np.ndarray, thresholds: list, keep_at, base_rows: int, base_s: float) -> Curve:
    kept, sec = [], []
    for t in thresholds:
        keep = np.ones(len(values), bool) if t is None else keep_at(values, t)
        kept.append(int(keep.sum()))
        sec.append(float(seconds[keep].sum()))
    return Curve(kept, sec, base_rows, base_s)
