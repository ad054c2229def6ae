"""An experiment's results as a table: `results.md` and a self-contained `index.html` with a plot per metric.

Both read the rows of `results.jsonl` (`training.experiment.trial_result`): one per trial, in trial order.
The plot puts `plot.x` (a trial key, e.g. `model.talker.n_mtp`) on the x axis and each `plot.y` key (a result
key, e.g. `val_loss` or `eval.talker_forwards_per_reply`) in its own panel.
"""

from __future__ import annotations

import base64
import html
import io
import math

from training.experiment import ExperimentConfig, value_at

COLUMNS = [("train loss", "train_loss"), ("val loss", "val_loss"), ("steps", "steps"), ("tokens seen", "tokens_seen"),
           ("tokens/s", "tokens_per_s"), ("wall s", "wall_s"), ("start-up s", "trial_startup_s"),
           ("eval WER", "eval.wer"), ("Talker fwd/reply", "eval.talker_forwards_per_reply"),
           ("first chunk s", "eval.first_chunk_latency_s"), ("speech acc", "eval.speech_acc"), ("MTP acc", "eval.mtp_acc")]


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return str(x)


def keys_of(exp: ExperimentConfig, rows: list[dict]) -> list[str]:
    """The trial keys that vary, in YAML order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r["overrides"] if k not in keys]
    return keys


def table(exp: ExperimentConfig, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the results table, values formatted: the trial keys, then the metrics any row has."""
    keys = keys_of(exp, rows)
    cols = [(label, key) for label, key in COLUMNS if any(value_at(r, key) is not None for r in rows)]
    val_sources = sorted({k for r in rows for k in r.get("losses", {}) if k.startswith("val_loss/")})
    header = [*keys, "status", *[label for label, _ in cols], *val_sources, "config hash"]
    body = [[*[_fmt(r["overrides"].get(k)) for k in keys], r["status"], *[_fmt(value_at(r, key)) for _, key in cols],
             *[_fmt(r.get("losses", {}).get(k)) for k in val_sources], r["config_hash"]] for r in rows]
    return header, body


def render_markdown(exp: ExperimentConfig, rows: list[dict]) -> str:
    header, body = table(exp, rows)
    lines = [f"# Experiment {exp.name}", "", exp.description.strip(), "", f"Base: `{exp.base}` (stage {exp.stage}); "
             f"{len(rows)} trials; rows of `results.jsonl`.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def plot_png(exp: ExperimentConfig, rows: list[dict]) -> bytes | None:
    """One panel per `plot.y` key against `plot.x` (numbers on a numeric axis, other values in trial order)."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    keys = keys_of(exp, rows)
    x_key = exp.plot.x or (keys[0] if keys else "")
    done = [r for r in rows if r["status"] == "done"]
    if not x_key or not done or not exp.plot.y:
        return None
    xs = [r["overrides"].get(x_key) for r in done]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)
    pos = xs if numeric else list(range(len(xs)))
    fig, axes = plt.subplots(1, len(exp.plot.y), figsize=(4.2 * len(exp.plot.y), 3.4), squeeze=False)
    for ax, y_key in zip(axes[0], exp.plot.y):
        pts = [(p, value_at(r, y_key)) for p, r in zip(pos, done)]
        pts = [(p, v) for p, v in pts if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if pts:
            pts.sort()
            ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o")
        if not numeric:
            ax.set_xticks(pos, [str(x) for x in xs], rotation=20, fontsize=8)
        ax.set_xlabel(x_key)
        ax.set_title(y_key, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(exp.name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def render_html(exp: ExperimentConfig, rows: list[dict]) -> str:
    header, body = table(exp, rows)
    png = plot_png(exp, rows)
    img = f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else "<p>no finished trial to plot</p>"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(exp.name)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:3px 8px;font-size:13px}th{background:#eee}</style></head><body>"
            f"<h1>Experiment {html.escape(exp.name)}</h1><p>{html.escape(exp.description.strip())}</p>"
            f"<p>Base <code>{html.escape(exp.base)}</code> (stage {exp.stage}), {len(rows)} trials.</p>{img}"
            "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + f"</tr>{cells}</table></body></html>")
