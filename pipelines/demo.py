"""`make demo`: the pipeline end to end on the bundled espeak-ng sample, embedded local Ray.

    python -m pipelines.demo --output out/demo

Each step calls the same entry point a user would run, and the demo prints where every
output is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tokenization.sample_corpus import make_tts_sample


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__)
    p.add_argument("--output", default="out/demo")
    p.add_argument("--num-cpus", type=int, default=None)
    args = p.parse_args(argv)
    out = Path(args.output).resolve()
    t0 = time.time()
    outputs: dict[str, str] = {}

    manifest = make_tts_sample(out / "sample")
    outputs["sample manifest"] = str(manifest)

    from pipelines import tokenize

    cpus = ["--num-cpus", str(args.num_cpus)] if args.num_cpus else []
    tok = tokenize.main(["--input", str(manifest), "--output", str(out / "tokens"), "--codec", "tiny", "--rows-per-shard", "12", *cpus])
    outputs["token shards"] = str(out / "tokens" / "shards")
    outputs["token manifest"] = str(out / "tokens" / "_manifest.json")

    print("\n== demo finished in %.0f s ==" % (time.time() - t0))
    for name, where in outputs.items():
        print(f"  {name:16s} {where}")
    print(f"  tokenize: {tok['rows_in']} rows in = {tok['kept']} kept + {tok['quarantined']} quarantined, {tok['hours'] * 3600:.0f} s of audio")
    return {"outputs": outputs, "tokenize": tok}


if __name__ == "__main__":
    print(json.dumps(main()["outputs"]))
