"""`make demo`: the whole chain on the bundled espeak-ng samples, with an embedded local Ray.

    python -m pipelines.demo --output out/demo

tokenize (TTS sample -> token shards) -> filter (dialogue sample -> kept/rejects by Whisper WER, DNSMOS and VAD)
-> audit (HTML/JSON report + dataset lint) -> train stages 1, 2, 3 (tiny configs, a few steps each,
chained by `init_from`) -> speak one reply to a WAV -> evaluate the stage-3 model on the valid split. Each step calls the same entry point a user runs, and
the demo prints where every output is. The terminal shows progress and one summary per step;
warnings and Ray workers' output go to OUT/logs/demo.log. Rerunning resumes: finished shards and trained stages
are skipped by the jobs themselves.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

from filtering.sample_dialogues import make_dialogue_sample, quality_args
from pipelines.cli import require_at_least, require_writable_folder, run
from pipelines.logs import setup_logging
from tokenization.sample_corpus import make_tts_sample
from training.stage_config import CONFIG_DIR


def _train(stage: int, data: Path, storage: Path, steps: int, init_from: list[Path], cpus: list[str]) -> Path:
    from pipelines import train

    overrides = [f"data.path={data}", f"checkpoint.storage_path={storage}", f"max_steps={steps}",
                 f"checkpoint.every_steps={steps}", "log_every=1",
                 f"tensorboard_dir={storage / 'tensorboard' / f'stage{stage}'}",
                 "checkpoint.init_from=[" + ",".join(str(p) for p in init_from) + "]"]
    train.main(["--stage", str(stage), "--config", os.path.join(CONFIG_DIR, f"stage{stage}_tiny.yaml"), *overrides])
    return storage / f"stage{stage}" / "export"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="out/demo")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray")
    p.add_argument("--steps", type=int, default=8, help="training steps per stage")
    p.add_argument("--tokenize-only", action="store_true", help="stop after the tokenize job")
    args = p.parse_args(argv)
    require_writable_folder("--output", args.output)
    require_at_least("--steps", args.steps, 1)
    require_at_least("--num-cpus", args.num_cpus, 1)
    out = Path(args.output).resolve()
    log_file = setup_logging("demo", out)  # one log for every job of the demo: OUT/logs/demo.log
    t0 = time.time()
    timings: dict[str, float] = {}
    outputs: dict[str, str] = {}
    cpus = ["--num-cpus", str(args.num_cpus)] if args.num_cpus else []

    def step(name: str):
        timings[name] = round(time.time() - t0 - sum(timings.values()), 1)
        print(f"\n== demo: {name} done ({timings[name]:.0f} s) ==", file=sys.stderr)

    from pipelines import audit, evaluate, filter as filter_job, speak, tokenize

    manifest = make_tts_sample(out / "sample" / "tts")
    tok = tokenize.main(["--input", str(manifest), "--output", str(out / "tokens"), "--codec", "tiny",
                         "--rows-per-shard", "12", *cpus])
    outputs["token shards"] = str(out / "tokens" / "shards")
    step("tokenize")
    summary: dict = {"tokenize": {k: tok[k] for k in ("rows_in", "kept", "quarantined")}}

    if not args.tokenize_only:
        dialogues = make_dialogue_sample(out / "sample" / "dialogues")
        flt = filter_job.main(["--input", str(dialogues), "--output", str(out / "dialogue"), "--asr", "tiny.en",
                               "--codec", "tiny", *quality_args(dialogues), *cpus])
        outputs["filter kept"] = str(out / "dialogue" / "kept")
        outputs["filter rejects"] = str(out / "dialogue" / "rejects")
        summary["filter"] = {k: flt[k] for k in ("rows_in", "kept", "rejected", "quarantined") if k in flt}
        step("filter")

        audit.main([str(out / "dialogue"), "--report", str(out / "report")])
        outputs["audit report"] = str(out / "report" / "index.html")
        step("audit")

        storage = out / "train"
        export1 = _train(1, out / "tokens" / "shards", storage, args.steps, [], cpus)
        step("train stage 1")
        export2 = _train(2, out / "dialogue" / "kept", storage, args.steps, [export1], cpus)
        step("train stage 2")
        export3 = _train(3, out / "dialogue" / "kept", storage, args.steps, [export2], cpus)
        step("train stage 3")
        outputs["checkpoints"] = str(storage)
        outputs["stage-3 model"] = str(export3)

        question = sorted(glob.glob(str(out / "sample" / "dialogues" / "wavs" / "*_q0.wav")))[0]
        wav = out / "reply.wav"
        summary["speak"] = speak.speak(["--checkpoint", str(export3), "--audio", question, "--codec", "tiny", "--out", str(wav),
                    "--max-frames", "60", "--max-text-tokens", "24"])
        outputs["spoken reply"] = str(wav)
        step("speak")

        ev = evaluate.main(["--checkpoint", str(export3), "--data", str(out / "dialogue" / "kept"), "--split", "valid",
                            "--output", str(out / "eval"), "--max-dialogues", "3", "--max-frames", "60",
                            "--max-text-tokens", "24"])
        outputs["evaluation"] = str(out / "eval" / "eval.md")
        summary["evaluate"] = {k: ev[k] for k in ("wer", "first_chunk_latency_s", "rtf", "text_acc", "speech_acc")}
        step("evaluate")

    total = time.time() - t0
    outputs["log"] = str(log_file)
    print(f"\n== demo finished in {total:.0f} s ==")
    for name, where in outputs.items():
        print(f"  {name:16s} {where}")
    t = summary["tokenize"]
    print(f"  tokenize: {t['rows_in']} rows in = {t['kept']} kept + {t['quarantined']} quarantined")
    if "filter" in summary:
        f = summary["filter"]
        print(f"  filter:   {f.get('rows_in')} rows in = {f.get('kept')} kept + {f.get('rejected')} rejected + "
              f"{f.get('quarantined')} quarantined")
    if "speak" in summary:
        r = summary["speak"]
        b = r.get("first_chunk_breakdown", {})
        print(f"  speak:    first chunk after {r['first_chunk_latency_s']:.2f} s "
              f"({', '.join(f'{k} {v:.2f} s' for k, v in b.items())}); {r['audio_s']:.1f} s of audio, RTF {r['rtf']:.2f}")
    if "evaluate" in summary:
        e = summary["evaluate"]
        print(f"  evaluate: ASR-WER {e['wer']:.2f}, first chunk {e['first_chunk_latency_s']:.2f} s, RTF {e['rtf']:.2f}, "
              f"teacher-forced text acc {e['text_acc']:.2f}, speech acc {e['speech_acc']:.2f} (a tiny model after a few steps)")
    return {"outputs": outputs, "timings_s": timings, "total_s": round(total, 1), **summary}


def cli(argv: list[str] | None = None) -> None:
    result = main(argv)
    print(json.dumps({"outputs": result["outputs"], "timings_s": result["timings_s"]}))


if __name__ == "__main__":
    run(cli)
