"""What a stage run would be, computed on the driver in seconds: no weights, no Ray, no GPU.

For the engineer about to book a cluster (`python -m pipelines.train ... --dry-run [--json]`):
parameters per part and how many this stage trains (the model is built on the meta device
from its sizes: a preset, the local checkpoints' `config.json`, or the `init_from` export's),
DeepSpeed's own ZeRO-2/ZeRO-3 memory estimate per GPU for `scaling`, tokens per optimizer
step, rows/hours/examples per split of every data source (small columns only, never
`codes`), each source's weight, share of samples and epochs reached at `max_steps`, and steps
per epoch. What cannot be computed here (a path only on the cluster, a missing
tokenizer, an unreachable s3:// folder) is a warning naming what is missing, not a failure.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import defaultdict

import pyarrow.parquet as pq
import torch

from tokenization import storage
from tokenization.dialogue_schema import DIALOGUE, ID_COLUMN, TTS, DialogueTurn, row_kind
from training.data.row_groups import TRAIN, list_row_groups, parquet_files
from training.data.selection import Selection, filter_columns, hours_cutoff, keep_mask, selection_of, source_folders
from training.data.sources import check_sources, shard_facts, speech_pair
from training.model.config import VocalNetConfig
from training.stage_config import StageConfig, resolve_init_model, resolve_tokenizer

GB = 1024**3
PARTS = ("audio_encoder", "adaptor", "thinker", "lora", "fusion", "talker", "mtp")
TEXT_SAMPLE = 256  # texts tokenized to estimate text tokens per example
MAX_QUIET_EPOCHS = 4  # a data source repeating more epochs than this by max_steps gets a warning (as one never finishing one)


def meta_model(model_cfg: VocalNetConfig):
    """The real VocalNetM2 classes on the meta device (no memory, no weights) from the config's sizes."""
    from training.model.vocalnet import VocalNetM2

    cfg = VocalNetConfig.from_dict(model_cfg.to_dict())
    cfg.audio.path = cfg.thinker.path = None  # sizes are in the config; build, do not load
    cfg.device = "meta"
    with torch.device("meta"):
        return VocalNetM2(cfg)


def count_parts(model) -> dict[str, dict[str, int]]:
    """{"parameters": {part: n}, "trainable": {part: n}}: Thinker without its LoRA, Talker without its MTP modules."""
    groups = {
        "audio_encoder": list(model.audio_encoder.parameters()),
        "adaptor": list(model.adaptor.parameters()),
        "thinker": [p for n, p in model.thinker.named_parameters() if "lora_" not in n],
        "lora": model.thinker.lora_parameters(),
        "fusion": list(model.fusion.parameters()),
        "talker": [p for n, p in model.talker.named_parameters() if not n.startswith("mtp.")],
        "mtp": list(model.talker.mtp.parameters()),
    }
    return {"parameters": {k: sum(p.numel() for p in ps) for k, ps in groups.items()},
            "trainable": {k: sum(p.numel() for p in ps if p.requires_grad) for k, ps in groups.items()}}


def zero_estimates(model, n_gpus: int, trainable: int) -> dict:
    """DeepSpeed's ZeRO-2/3 model-state estimates (no offload) in GB per GPU.

    `all_params`: DeepSpeed's `*_all_live(model)` convention (every parameter trained).
    `this_stage`: the estimator fed this stage's trainable count, plus the frozen weights in
    bf16 (ZeRO-2 keeps them whole on every GPU; ZeRO-3 partitions them).
    The `_all_live` helpers only print and count by `data_ptr` (0 for every meta tensor), so the
    counts are made here the way they make them and passed to the estimators that return.
    """
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed logs its accelerator choice to stdout: keep --json clean
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    frozen = total - trainable

    def z2(n: int) -> float:
        return estimate_zero2_model_states_mem_needs(n, num_gpus_per_node=n_gpus, num_nodes=1, cpu_offload=False)[1] / GB

    def z3(n: int, largest_layer: int) -> float:
        return estimate_zero3_model_states_mem_needs(n, largest_layer, num_gpus_per_node=n_gpus, num_nodes=1,
                                                     cpu_offload=False)[1] / GB

    return {
        "gpus": n_gpus,
        "all_params": {"zero2_gb_per_gpu": round(z2(total), 2), "zero3_gb_per_gpu": round(z3(total, largest), 2)},
        "this_stage": {"zero2_gb_per_gpu": round(z2(trainable) + 2 * frozen / GB, 2),
                       "zero3_gb_per_gpu": round(z3(trainable, largest) + 2 * frozen / n_gpus / GB, 2)},
        "estimator": "deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs / "
                     "stage3.estimate_zero3_model_states_mem_needs (cpu_offload=False)",
    }


def _leaf(pf: pq.ParquetFile, top: str, name: str) -> str | None:
    """Parquet column path of a nested leaf, e.g. turns.list.element.role (writers name the list item differently)."""
    for i in range(len(pf.schema)):
        path = pf.schema.column(i).path
        if path.startswith(top + ".") and path.endswith("." + name):
            return path
    return None


def scan_data(path: str, stage: int, max_frames: int, max_audio_s: float = 0.0, selection: Selection = Selection()) -> dict:
    """Rows, hours and stage examples per split of one shard folder, from small columns only (never `codes` or audio);
    only the rows `selection` picks (`max_wer`: of the filter output's kept/ and rejects/; `hours`: a train subset).

    Rows whose id is in `selection.exclude` (a dedup folder's drops) are not counted in the splits; `excluded`
    counts them."""
    exclude = selection.exclude
    folders = source_folders(path, selection.max_wer)
    files = [f for folder in folders for f in parquet_files(folder)]
    cutoff = (hours_cutoff([g for folder in folders for g in list_row_groups(folder, TRAIN)], ID_COLUMN[TTS], selection.hours)
              if selection.hours else None)
    splits: dict[str, dict] = defaultdict(lambda: {"rows": 0, "hours": 0.0, "examples": 0, "frames": 0})
    excluded = {"rows": 0, "hours": 0.0}
    texts: list[str] = []
    for path in files:
        with storage.open_input(path) as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            dialogue = row_kind(names) == DIALOGUE
            if dialogue:
                cols = {k: _leaf(pf, "turns", k) for k in ("role", "duration_s", "n_frames", "text")}
                cols = {k: v for k, v in cols.items() if v}
            else:
                cols = {k: k for k in ("duration_s", "n_frames", "text") if k in names}
            has_split = "split" in names
            id_column = ID_COLUMN[DIALOGUE if dialogue else TTS]
            picked = filter_columns(selection.max_wer, cutoff, id_column, has_split, exclude)
            table = pf.read(columns=list(dict.fromkeys([*cols.values(), *(["split"] if has_split else []), *picked])))
        keep = keep_mask(table, selection.max_wer, cutoff, id_column)  # before exclusion: `excluded` counts the rest
        rows = [row for row, k in zip(table.to_pylist(), keep) if k]
        for row in rows:
            if exclude and row[id_column] in exclude:
                excluded["rows"] += 1
                excluded["hours"] += (sum(t.get("duration_s") or 0 for t in row["turns"] or []) if dialogue
                                      else row.get("duration_s") or 0) / 3600
                continue
            split = (row.get("split") or "train") if has_split else "train"
            s = splits[split]
            s["rows"] += 1
            if dialogue:
                turns = [DialogueTurn.from_dict(t) for t in row["turns"] or []]  # the read leaves; the rest None
                s["hours"] += sum(t.duration_s or 0 for t in turns) / 3600
                for user, reply in zip(turns, turns[1:]):
                    if not speech_pair(user, reply, max_audio_s):
                        continue
                    frames = reply.n_frames
                    if (stage == 3 and not frames) or (max_frames and (frames or 0) > max_frames):
                        continue
                    s["examples"] += 1
                    s["frames"] += frames or 0
                    if len(texts) < TEXT_SAMPLE and reply.text:
                        texts.append(reply.text)
            else:
                s["hours"] += (row.get("duration_s") or 0) / 3600
                frames = row.get("n_frames") or 0
                if max_frames and frames > max_frames:
                    continue
                s["examples"] += 1
                s["frames"] += frames
                if len(texts) < TEXT_SAMPLE and row.get("text"):
                    texts.append(row["text"])
    out = {k: {"rows": v["rows"], "hours": round(v["hours"], 6), "examples": v["examples"],
               "mean_frames": round(v["frames"] / v["examples"], 2) if v["examples"] else 0.0} for k, v in sorted(splits.items())}
    return {"files": len(files), "splits": out, "text_sample": texts, "excluded": {**excluded, "hours": round(excluded["hours"], 6)}}


def scan_sources(cfg: StageConfig, per_step: int, warnings: list[str]) -> dict | None:
    """`data` of the plan: every source's rows and hours per split, weight, share of samples and the epochs it
    reaches at `max_steps` (with a warning past `MAX_QUIET_EPOCHS` or short of one), and the splits summed.

    Sources not readable here are a warning each; the readable ones must agree (`check_sources`: UserError).
    None when no source is readable.
    """
    mixture = cfg.data.mixture()
    total_weight = sum(s.weight for s in mixture)
    samples = cfg.max_steps * per_step
    scanned, facts = {}, {}
    for s in mixture:
        label = f"data source {s.name} ({s.path})" if cfg.data.sources else f"data.path {s.path}"
        try:
            scanned[s.name] = scan_data(s.path, cfg.stage, cfg.data.max_frames, cfg.data.max_audio_s, selection_of(s))
            facts[s.name] = shard_facts(source_folders(s.path, s.max_wer)[0])
        except Exception as exc:  # noqa: BLE001 - a path only on the cluster, an unreachable s3://: say what is missing
            missing = "its rows, hours and epochs" if cfg.data.sources else "rows, hours, tokens per step and steps per epoch"
            warnings.append(f"{label}: not readable here ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}): "
                            f"{missing} not computed")
    check_sources(cfg.stage, [(s.name, s.path) for s in mixture], facts)
    if not scanned:
        return None
    sources, texts, splits = [], [], defaultdict(lambda: {"rows": 0, "hours": 0.0, "examples": 0, "frames": 0.0})
    mean_frames = 0.0
    readable_weight = sum(s.weight for s in mixture if s.name in scanned)
    for s in mixture:
        share = s.weight / total_weight
        entry = {"name": s.name, "path": s.path, "weight": s.weight, "share": round(share, 4),
                 "samples_at_max_steps": round(share * samples)}
        sources.append(entry)
        if s.name not in scanned:
            continue
        d = scanned[s.name]
        texts += d["text_sample"][:max(1, TEXT_SAMPLE // len(mixture))]
        entry.update(files=d["files"], splits=d["splits"])
        if s.excludes():  # rows and hours before and after the dedup folders' drops, every split
            after = {k: round(sum(v[k] for v in d["splits"].values()), 6) for k in ("rows", "hours")}
            entry["exclusion"] = {"exclude": s.excludes(), "before": {k: round(after[k] + d["excluded"][k], 6) for k in after},
                                  "after": after}
        for split, v in d["splits"].items():
            for key in ("rows", "hours", "examples"):
                splits[split][key] += v[key]
            splits[split]["frames"] += v["examples"] * v["mean_frames"]
        train = d["splits"].get("train", {"examples": 0, "mean_frames": 0.0})
        mean_frames += s.weight / readable_weight * train["mean_frames"]
        epochs = share * samples / train["examples"] if train["examples"] else None
        entry["epochs_at_max_steps"] = None if epochs is None else round(epochs, 3)
        if epochs is None:
            warnings.append(f"data source {s.name}: no train examples, so it can never give a batch")
        elif epochs > MAX_QUIET_EPOCHS:
            warnings.append(f"data source {s.name} repeats {epochs:.1f} epochs by step {cfg.max_steps} (over {MAX_QUIET_EPOCHS}): "
                            "lower its weight or add data")
        elif epochs < 1:
            warnings.append(f"data source {s.name} never finishes an epoch: {epochs:.0%} of its train examples by step "
                            f"{cfg.max_steps}")
    summed = {k: {"rows": v["rows"], "hours": round(v["hours"], 6), "examples": v["examples"],
                  "mean_frames": round(v["frames"] / v["examples"], 2) if v["examples"] else 0.0} for k, v in sorted(splits.items())}
    data = {"files": sum(d["files"] for d in scanned.values()), "splits": summed, "sources": sources,
            "text_sample": texts, "mean_frames": mean_frames}
    return {"path": cfg.data.path, **data} if not cfg.data.sources else data


def mean_text_tokens(tokenizer_spec: str, texts: list[str]) -> float:
    """Tokens per reply text (+1 for the end token) over a sample, with the run's own tokenizer."""
    from tokenizers import Tokenizer

    path = resolve_tokenizer(tokenizer_spec)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer {tokenizer_spec}: no tokenizer.json at {path}")
    tok = Tokenizer.from_file(path)
    return sum(len(tok.encode(t).ids) + 1 for t in texts) / max(1, len(texts))


def plan(cfg: StageConfig) -> dict:
    """Everything `--dry-run` reports, as a JSON-able dict (see the module docstring)."""
    t0 = time.perf_counter()
    warnings: list[str] = [n for n in cfg.notes if "not found" in n]
    out: dict = {"stage": cfg.stage, "config": cfg.source, "sizes_from": [n for n in cfg.notes if "not found" not in n]}
    if cfg.model is None:
        problem = resolve_init_model(cfg)
        if problem:
            warnings.append(f"{problem}: parameters and ZeRO memory not computed")
        else:
            out["sizes_from"] = [n for n in cfg.notes if "not found" not in n]
    ds = cfg.deepspeed_config()
    n_gpus = cfg.scaling.num_workers
    per_step = cfg.data.micro_batch_size * cfg.optim.grad_accum * n_gpus
    out["zero_stage"] = ds["zero_optimization"].get("stage")
    out["max_steps"] = cfg.max_steps
    out["batch"] = {"micro_batch_size": cfg.data.micro_batch_size, "grad_accum": cfg.optim.grad_accum,
                    "num_workers": n_gpus, "examples_per_step": per_step}
    n_codebooks = cfg.model.talker.n_codebooks if cfg.model else None
    if cfg.model is not None:
        model = meta_model(cfg.model)
        model.set_stage(cfg.stage)
        counts = count_parts(model)
        out["parameters"] = counts["parameters"]
        out["trainable"] = counts["trainable"]
        out["parameters_total"] = sum(counts["parameters"].values())
        out["trainable_total"] = sum(counts["trainable"].values())
        out["zero_memory"] = zero_estimates(model, n_gpus, out["trainable_total"])
    data = scan_sources(cfg, per_step, warnings)
    if data is not None:
        texts = data.pop("text_sample")
        mean_frames = data.pop("mean_frames")
        out["data"] = data
        out["steps_per_epoch"] = data["splits"].get("train", {"examples": 0})["examples"] // per_step
        tokens = 0.0
        if cfg.stage in (1, 3) and n_codebooks:
            tokens += mean_frames * n_codebooks  # speech targets: frames x codebooks
        if cfg.stage in (2, 3):
            try:
                tokens += mean_text_tokens(cfg.tokenizer, texts)
            except Exception as exc:  # noqa: BLE001
                warnings.append(f"tokenizer: {' '.join(str(exc).split())}: text tokens left out of tokens_per_step")
        out["tokens_per_step"] = round(tokens * per_step)
    out["warnings"] = warnings
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def format_plan(p: dict) -> str:
    """The plan for a terminal."""
    lines = [f"stage {p['stage']} dry run ({p['config']}): ZeRO-{p['zero_stage']}, {p['batch']['num_workers']} workers x "
             f"micro-batch {p['batch']['micro_batch_size']} x accum {p['batch']['grad_accum']} = {p['batch']['examples_per_step']} examples/step"]
    lines += [f"  sizes: {s}" for s in p["sizes_from"]]
    if "parameters" in p:
        lines.append(f"  {'part':<14}{'parameters':>16}{'trainable':>16}")
        for part in PARTS:
            lines.append(f"  {part:<14}{p['parameters'][part]:>16,}{p['trainable'][part]:>16,}")
        lines.append(f"  {'total':<14}{p['parameters_total']:>16,}{p['trainable_total']:>16,}")
        z = p["zero_memory"]
        lines.append(f"  model states per GPU ({z['gpus']} GPUs, DeepSpeed estimate): this stage ZeRO-2 "
                     f"{z['this_stage']['zero2_gb_per_gpu']} GB, ZeRO-3 {z['this_stage']['zero3_gb_per_gpu']} GB; "
                     f"all params trained ZeRO-2 {z['all_params']['zero2_gb_per_gpu']} GB, ZeRO-3 {z['all_params']['zero3_gb_per_gpu']} GB")
    if "data" in p:
        for split, s in p["data"]["splits"].items():
            lines.append(f"  data {split}: {s['rows']:,} rows, {s['hours']:.2f} h, {s['examples']:,} examples")
        lines.append(f"  {'source':<16}{'weight':>8}{'share':>8}{'epochs':>9}  rows / hours per split "
                     f"(share of samples, epochs reached at max_steps {p['max_steps']:,})")
        for s in p["data"]["sources"]:
            epochs = s.get("epochs_at_max_steps")
            per_split = ", ".join(f"{k} {v['rows']:,} / {v['hours']:.2f} h" for k, v in s.get("splits", {}).items()) or "not readable here"
            lines.append(f"  {s['name']:<16}{s['weight']:>8g}{s['share']:>8.1%}{'-' if epochs is None else f'{epochs:.2f}':>9}  {per_split}")
            if "exclusion" in s:
                b, a = s["exclusion"]["before"], s["exclusion"]["after"]
                lines.append(f"  {'':<16}exclude {', '.join(s['exclusion']['exclude'])}: {b['rows']:,} rows / {b['hours']:.2f} h "
                             f"-> {a['rows']:,} rows / {a['hours']:.2f} h")
        lines.append(f"  tokens per optimizer step: {p['tokens_per_step']:,}; steps per epoch: {p['steps_per_epoch']:,}")
    lines += [f"  warning: {w}" for w in p["warnings"]]
    return "\n".join(lines)
