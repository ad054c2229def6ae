"""A compact, align-free audio fingerprint of one clip: the set of its spectral-peak landmark hashes.

Written per row by the tokenize job while it holds the waveform (`audio_fp`, `tokenization.schema`), and
computed from the FLAC turns of dialogue shards by `pipelines.dedup`; `filtering/dedup/` compares them.

Method (Wang's landmarks, as Shazam): the clip at 8 kHz (so a 16 -> 8 -> 16 kHz resample loses nothing the
fingerprint sees) -> log-magnitude STFT -> local maxima of the spectrogram (peaks) above a floor relative to
the clip's loudest bin (a gain change moves every bin alike) -> each peak paired with the next few peaks
after it -> a 32-bit hash of (f1, f2, dt). A pair's hash depends only on the two peaks' frequencies and their
distance in time, never on where the clip starts, so a crop keeps the hashes of what it kept; MP3 coding and
30 dB SNR noise leave the strong peaks standing. Two recordings of the same speech share a large part of their
sets, another voice or another text almost none: `docs/dedup.md`,
`benchmarks/dedup_quality.py`.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter

from tokenization.audio import resample

FP_RATE = 8000  # Hz: the fingerprint hears 0-4 kHz
N_FFT, HOP = 512, 128  # 64 ms window, 16 ms hop at 8 kHz
F_LO, F_HI = 10, 224  # FFT bins kept: 156 Hz .. 3.5 kHz (below the 4 kHz edge a resampler's filter rolls off)
PEAK_NEIGHBOURHOOD = (15, 9)  # (bins, frames): a peak is the loudest bin of this box around it
FLOOR_DB = 45.0  # peaks at most this far below the clip's loudest bin
PEAKS_PER_S = 40  # the loudest peaks kept per second of audio
PHASES = 4  # STFTs started at 0, 1/4, 1/2, 3/4 hop: a crop that starts between two frames still meets its frames
SAMPLE = 8  # keep the hashes divisible by 8: about 40 per second of speech (160 bytes)
FAN_OUT, MAX_DT, MAX_DF = 4, 48, 64  # each peak pairs with its next FAN_OUT peaks within MAX_DT frames, MAX_DF bins


def fingerprint(samples: np.ndarray, rate: int) -> np.ndarray:
    """The clip's landmark hashes, sorted and unique.

    Args:
        samples: mono waveform [N] (float).
        rate: its sample rate in Hz.
    Returns:
        uint32 array [M] (M about 40 per second of speech; empty for silence or clips under 0.1 s).
    """
    x = resample(np.asarray(samples, np.float32), rate, FP_RATE)
    if len(x) < N_FFT:
        return np.zeros(0, np.uint32)
    h = np.unique(np.concatenate([_phase(x[off:]) for off in range(0, HOP, HOP // PHASES)]))
    return h[h % SAMPLE == 0]  # the same 1/SAMPLE of the hash space for every clip: Jaccard is kept, storage cut


def _phase(x: np.ndarray) -> np.ndarray:
    """Landmark hashes of the STFT whose frames start at sample 0 of `x` (8 kHz)."""
    if len(x) < N_FFT:
        return np.zeros(0, np.uint32)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * np.hanning(N_FFT).astype(np.float32)
    spec = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1))[:, F_LO:F_HI].T + 1e-6)  # [F, T] dB
    peak = (spec == maximum_filter(spec, size=PEAK_NEIGHBOURHOOD, mode="constant", cval=-np.inf))
    peak &= spec > spec.max() - FLOOR_DB
    f, t = np.nonzero(peak)
    keep = int(PEAKS_PER_S * len(x) / FP_RATE) + 1
    if len(f) > keep:
        top = np.argsort(-spec[f, t], kind="stable")[:keep]
        f, t = f[top], t[top]
    order = np.lexsort((f, t))
    return _landmarks(f[order].astype(np.int64), t[order].astype(np.int64))


def _landmarks(f: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Peaks [P] sorted by time -> uint32 hashes of (f1, f2, dt) of each peak with its next FAN_OUT peaks."""
    out = []
    for k in range(1, FAN_OUT * 3 + 1):  # look further ahead than FAN_OUT: some neighbours fall outside the zone
        if k >= len(f):
            break
        dt, df = t[k:] - t[:-k], f[k:] - f[:-k]
        ok = (dt > 0) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
        out.append(np.stack([np.arange(len(dt))[ok], np.full(ok.sum(), k), f[:-k][ok], f[k:][ok], dt[ok]], 1))
    if not out:
        return np.zeros(0, np.uint32)
    pairs = np.concatenate(out)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]  # per anchor, nearest first
    anchor = pairs[:, 0]
    rank = np.arange(len(anchor)) - np.searchsorted(anchor, anchor)  # position among this anchor's pairs
    pairs = pairs[rank < FAN_OUT]
    key = (pairs[:, 2] << 16) | (pairs[:, 3] << 6) | pairs[:, 4]  # f1 (8 bits), f2 (8 bits), dt (6 bits)
    return np.unique(mix32(key.astype(np.uint64)))


def mix32(x: np.ndarray) -> np.ndarray:
    """A fixed 64 -> 32-bit integer mix (splitmix64's finalizer): spreads keys over the 32-bit range."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two sorted unique fingerprints (0 when both are empty)."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0
