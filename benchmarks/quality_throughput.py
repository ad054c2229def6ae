"""Audio-quality scoring cost and exactness (`--quality dnsmos,vad`); prints one JSON object.

    python benchmarks/quality_throughput.py [--rounds 2] [--batch-size 8] [--device cpu|cuda]

Clips: every other distinct assistant answer of the bundled dialogue sample (espeak), each also under
10 dB white noise and padded with 3 s / 2 s of silence: 1.5-8.5 s, as dialogue answers are; stored as
the filter stores them (16-bit FLAC), and the reference scores the same decoded samples. CPU seconds
are the process's (`time.process_time`: every thread of it), medians of interleaved rounds, models
loaded and warmed up first.

    dnsmos_max_abs_diff_vs_reference  max |ours - speechmos.dnsmos.run| over the four DNSMOS columns (goal <= 0.02)
    dnsmos_vs_reference_speed         audio-s per CPU-s of our quality step (DNSMOS only, as the filter's actor
                                      runs it on dialogue items) / the same for `speechmos.dnsmos.run` clip by
                                      clip on the same clips (goal >= 1.0)
    dnsmos_cpu_s_per_audio_s          our DNSMOS step
    vad_cpu_s_per_audio_s             our VAD step (Silero VAD, ONNX)
    asr_cpu_s_per_audio_s             the filter's ASR (`load_asr("tiny.en")`: fastest backend, length-following windows)
    sizing_10k_hours                  CPU-hours of each for 10,000 hours of answers, and wall hours on N cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu_info import cpu_info  # noqa: E402
from filtering.asr import SAMPLE_RATE, load_asr  # noqa: E402
from tokenization.readers.registry import read_dialogues  # noqa: E402
from tokenization.dialogue_schema import ASSISTANT, USER, DialogueRow, DialogueTurn, flac_to_pcm, pcm_to_flac  # noqa: E402
from filtering.filter_job import QualityBatch  # noqa: E402
from filtering.quality import DNSMOS_COLUMNS, QualityScorer  # noqa: E402
from filtering.rules import Rules  # noqa: E402
from filtering.sample_dialogues import add_noise, make_dialogue_sample, pad_silence  # noqa: E402
from tokenization.audio import load_audio  # noqa: E402
from tokenization.engine.jobs import Item  # noqa: E402

REF_KEYS = {"dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos", "dnsmos_ovrl": "ovrl_mos", "dnsmos_p808": "p808_mos"}
HOURS = 10_000


def clips_of_sample(work: Path) -> list[np.ndarray]:
    specs, _ = read_dialogues(str(make_dialogue_sample(work / "sample")))
    paths = sorted({t.audio_path for s in specs if not s.dialogue_id.startswith("q") for t in s.turns if t.role == ASSISTANT})
    clean = [load_audio(p, SAMPLE_RATE) for p in paths[::2]]
    clips = clean + [add_noise(c, 10.0, seed=i) for i, c in enumerate(clean)] + [pad_silence(c, SAMPLE_RATE, 3.0, 2.0) for c in clean]
    return [flac_to_pcm(pcm_to_flac(c, SAMPLE_RATE))[0] for c in clips]  # the samples the quality step decodes


def items_of(clips: list[np.ndarray]) -> list[Item]:
    """Each clip as the assistant turn of a dialogue item, as the filter's quality step receives it."""
    q = np.zeros(SAMPLE_RATE // 2, np.float32)
    return [Item(0, 0, i, id=f"b{i}", row=DialogueRow(f"b{i}", "bench", "en", "s", [
        DialogueTurn(USER, "Q?", pcm_to_flac(q, SAMPLE_RATE), SAMPLE_RATE, 0.5),
        DialogueTurn(ASSISTANT, "A.", pcm_to_flac(c, SAMPLE_RATE), SAMPLE_RATE, len(c) / SAMPLE_RATE)])) for i, c in enumerate(clips)]


def cpu_time(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cuda: DNSMOS on onnxruntime's CUDA provider (onnxruntime-gpu)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per step call (the filter's --batch-size)")
    args = p.parse_args()
    from speechmos import dnsmos as reference

    clips = clips_of_sample(Path(tempfile.mkdtemp(prefix="quality_bench_")))
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    b = args.batch_size
    rules = Rules()
    dnsmos_step = QualityBatch(QualityScorer(("dnsmos",), args.device), rules)  # one onnxruntime thread: the actor's default
    vad_step = QualityBatch(QualityScorer(("vad",)), rules)
    asr = load_asr("tiny.en", batch_size=b)

    def run_step(step):
        items = items_of(clips)
        for i in range(0, len(items), b):
            step(items[i: i + b])
        return items

    def run_reference():
        return [reference.run(c, SAMPLE_RATE) for c in clips]

    def run_asr():
        for i in range(0, len(clips), b):
            asr.transcribe(clips[i: i + b])

    ours, ref = run_step(dnsmos_step), run_reference()  # warm-up, and the exactness figures
    run_step(vad_step), run_asr()
    diff = max(abs(getattr(it.row.turns[1], c) - r[REF_KEYS[c]]) for it, r in zip(ours, ref) for c in DNSMOS_COLUMNS)
    times: dict[str, list[float]] = {"dnsmos": [], "reference": [], "vad": [], "asr": []}
    for _ in range(args.rounds):  # interleaved: a slow spell of a shared box hits every figure alike
        times["dnsmos"].append(cpu_time(lambda: run_step(dnsmos_step)))
        times["reference"].append(cpu_time(run_reference))
        times["vad"].append(cpu_time(lambda: run_step(vad_step)))
        times["asr"].append(cpu_time(run_asr))
    med = {k: statistics.median(v) for k, v in times.items()}
    per_s = {k: round(v / audio_s, 4) for k, v in med.items()}
    cpu_h = {k: round(HOURS * v, 1) for k, v in per_s.items()}  # CPU-hours for 10k audio-hours
    cores = (16, 64, 256)
    print(json.dumps({
        "dnsmos_max_abs_diff_vs_reference": round(float(diff), 5),
        "dnsmos_vs_reference_speed": round(med["reference"] / med["dnsmos"], 2),
        "dnsmos_cpu_s_per_audio_s": per_s["dnsmos"],
        "vad_cpu_s_per_audio_s": per_s["vad"],
        "asr_cpu_s_per_audio_s": per_s["asr"],
        "reference_dnsmos_cpu_s_per_audio_s": per_s["reference"],
        "cpu": cpu_info(),
        "audio_seconds": round(audio_s, 2), "clips": len(clips), "batch_size": b, "rounds": args.rounds, "device": args.device,
        "asr_model": asr.name,
        "sizing_10k_hours": {"cpu_hours": {k: cpu_h[k] for k in ("dnsmos", "vad", "asr")},
                             "wall_hours_dnsmos_vad_asr": {f"{n}_cores": round((cpu_h["dnsmos"] + cpu_h["vad"] + cpu_h["asr"]) / n, 1)
                                                           for n in cores}},
        "goals": {"dnsmos_max_abs_diff_vs_reference": 0.02, "dnsmos_vs_reference_speed": 1.0},
    }))


if __name__ == "__main__":
    main()
