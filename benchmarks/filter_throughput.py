"""Filter throughput on the bundled espeak dialogue sample; prints one JSON object.

    python benchmarks/filter_throughput.py [--repeat 2] [--batch-size 8] [--rounds 3]

Figures (audio-seconds transcribed per wall-second, all on the same assistant clips, models
loaded and warmed up before timing):
    asr_vs_padded        the filter's ASR step (`load_asr("tiny.en")`: the CPU default, faster-whisper int8; windows
                         that follow speech length) / the same backend with every clip in a 30 s window (goal >= 3)
    wer_delta_vs_padded  mean absolute per-clip WER difference between the two (goal <= 0.02)
    faster_vs_openai     faster-whisper int8 / openai-whisper fp32, both as the filter runs them (raw figure;
                         it depends on the CPU, hence `cpu`)
    pipeline_vs_bare   filter steps (read + decode + validate + FLAC + ASR + normalize + WER + rules
                       + shard write) / bare loop of the same ASR over pre-loaded arrays (goal >= 0.9)
The codec step (assistant turns of kept rows) runs in its own actor pool in the Ray job; its
throughput is reported as a raw figure, as is the pipeline including it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu_info import cpu_info  # noqa: E402
from filtering.asr import SAMPLE_RATE, fastest_backend, load_asr, shipped_tiny_en  # noqa: E402
from filtering.ct2_to_openai_whisper import convert  # noqa: E402
from filtering.wer import score as wer_score  # noqa: E402
from tokenization.readers.registry import list_units, read_dialogues  # noqa: E402
from tokenization.dialogue_schema import ASSISTANT  # noqa: E402
from filtering.filter_job import filter_job  # noqa: E402
from filtering.rules import Rules  # noqa: E402
from filtering.sample_dialogues import make_dialogue_sample  # noqa: E402
from tokenization.audio import load_audio  # noqa: E402
from tokenization.codec_factory import load_codec  # noqa: E402
from tokenization.schema import file_metadata  # noqa: E402
from tokenization.engine.local_run import run_local  # noqa: E402
from tokenization.units import ReaderOptions  # noqa: E402


def bare_loop(asr, audios, batch_size: int, padded: bool = False) -> tuple[float, list[str]]:
    """Transcribe in batches; `padded`: the same loaded model with every clip in a 30 s window."""
    was, asr.padded = asr.padded, padded
    try:
        t, hyps = time.perf_counter(), []
        for i in range(0, len(audios), batch_size):
            hyps += asr.transcribe(audios[i : i + batch_size])
        return time.perf_counter() - t, hyps
    finally:
        asr.padded = was


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=2, help="passes over the sample (more audio, steadier figures)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per figure (medians)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filter_bench_"))
    manifest = make_dialogue_sample(work / "sample")
    specs, _ = read_dialogues(str(manifest))
    readable = [s for s in specs if not s.dialogue_id.startswith("q")]  # readable dialogues only
    # Distinct copies with distinct ids: the job's id pre-pass would drop repeated ids.
    specs = [dataclasses.replace(s, dialogue_id=f"{s.dialogue_id}_r{r}") for r in range(args.repeat) for s in readable]
    clips = [t.audio_path for s in specs for t in s.turns if t.role == ASSISTANT]
    audios = [load_audio(c, SAMPLE_RATE) for c in clips]
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE

    texts = [t.text for s in specs for t in s.turns if t.role == ASSISTANT]
    t = time.perf_counter()
    fastest_backend("tiny.en", batch_size=args.batch_size)  # what `--asr-backend auto` measures once per CPU (timed here)
    t_choose = time.perf_counter() - t
    filt = load_asr("tiny.en", batch_size=args.batch_size)  # what the filter's ASR step loads
    ckpt = convert(shipped_tiny_en(), work / "tiny_en.pt")
    fw = load_asr("faster-whisper:tiny.en", batch_size=args.batch_size, compute_type="int8")
    ow = load_asr(f"openai-whisper:{ckpt}", batch_size=args.batch_size)
    for asr in (filt, fw, ow):
        asr.transcribe(audios)  # warm-up (and each backend's cached padding windows)
    bare_loop(filt, audios[: args.batch_size], args.batch_size, padded=True)
    # Rounds over every figure in turn, medians: a slow spell of a shared box hits all of them alike.
    # The padded baseline is the filter's own loaded model with 30 s windows (same threads, same weights).
    runs = {"filt": (filt, False), "pad": (filt, True), "fw": (fw, False), "ow": (ow, False)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    hyps: dict[str, list[str]] = {}  # the last round's transcripts
    for _ in range(args.rounds):
        for key, (asr, pad) in runs.items():
            t, hyps[key] = bare_loop(asr, audios, args.batch_size, pad)
            times[key].append(t)
    t_filt, t_pad, t_fw, t_ow = (statistics.median(times[k]) for k in runs)
    wer_delta = sum(abs(wer_score(r, a).wer - wer_score(r, b).wer)
                    for r, a, b in zip(texts, hyps["filt"], hyps["pad"])) / len(texts)

    codec = load_codec("tiny")
    meta = file_metadata(codec.info, {"run_id": "bench"})
    bench_manifest = work / "bench_dialogues.jsonl"  # the repeated dialogues as one manifest unit, read like the job reads it
    bench_manifest.write_text("".join(json.dumps({"id": s.dialogue_id, "source": s.source, "language": s.language,
                                                  "speaker": s.speaker, "turns": [{"role": t.role, "text": t.text, "audio_path": t.audio_path}
                                                            for t in s.turns]}) + "\n"
                                      for s in specs))
    opts = ReaderOptions()
    units = list_units(str(bench_manifest), "dialogue", opts)

    def pipeline(with_codec: bool, out: Path) -> float:
        job = filter_job("dialogue", opts, "bench", asr=filt, rules=Rules(), codec=codec, max_seconds=60.0,
                         rows_per_shard=10_000, batch_size=args.batch_size)
        job.steps = job.steps if with_codec else job.steps[:1]
        t = time.perf_counter()
        run_local(job, units, str(out), meta)
        return time.perf_counter() - t

    t_pipe = statistics.median(pipeline(False, work / f"out{r}") for r in range(args.rounds))
    t_codec_pipe = statistics.median(pipeline(True, work / f"out_codec{r}") for r in range(args.rounds))
    rate = lambda s: round(audio_s / s, 2)  # noqa: E731
    print(json.dumps({
        "asr_vs_padded": round(t_pad / t_filt, 2),
        "wer_delta_vs_padded": round(wer_delta, 4),
        "faster_vs_openai": round(t_ow / t_fw, 2),
        "pipeline_vs_bare": round(t_filt / t_pipe, 3),
        "pipeline_with_codec_vs_bare": round(t_filt / t_codec_pipe, 3),
        "cpu": cpu_info(),
        "audio_seconds": round(audio_s, 2), "clips": len(audios), "batch_size": args.batch_size,
        "asr_audio_s_per_s": rate(t_filt), "padded_audio_s_per_s": rate(t_pad),
        "faster_whisper_int8_audio_s_per_s": rate(t_fw), "openai_whisper_fp32_audio_s_per_s": rate(t_ow),
        "pipeline_audio_s_per_s": rate(t_pipe), "pipeline_with_codec_audio_s_per_s": rate(t_codec_pipe),
        "asr_model": filt.name, "padded_model": f"{filt.name} (30 s windows)", "backend_choice_s": round(t_choose, 2),
        "asr_models": [fw.name, ow.name],
        "goals": {"asr_vs_padded": 3.0, "wer_delta_vs_padded": 0.02, "pipeline_vs_bare": 0.9},
    }))


if __name__ == "__main__":
    main()
