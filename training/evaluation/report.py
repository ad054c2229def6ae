"""The evaluation summary as short tables: Markdown (`eval.md`) and a small self-contained HTML page.

Both come from the same `tables(summary)`: headline metrics, accuracy per head (backbone and
each MTP module) and per codebook, and the first replies (generated text vs what the ASR heard).
"""

from __future__ import annotations

import html

HEADLINE = [
    ("ASR-WER of generated speech (corpus)", "wer"), ("WER, mean per reply", "wer_mean"), ("CER, mean", "cer_mean"),
    ("generated text vs reference, WER", "text_wer_vs_reference"),
    ("first-chunk latency, mean (s)", "first_chunk_latency_s"), ("first-chunk latency, p90 (s)", "first_chunk_latency_s_p90"),
    ("real-time factor, mean", "rtf"), ("Talker forwards per reply", "talker_forwards_per_reply"),
    ("frames per Talker forward", "frames_per_forward"),
    ("teacher-forced text accuracy", "text_acc"), ("teacher-forced speech accuracy (all codebooks)", "speech_acc"),
    ("replies (spoken)", None),
]
MAX_ROWS = 20


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table, values formatted."""
    head = []
    for label, key in HEADLINE:
        value = f"{summary['n_replies']} ({summary['n_replies_spoken']})" if key is None else _fmt(summary.get(key))
        head.append([label, value])
    heads = [["backbone (frame t)", _fmt(summary["speech_acc"])]]
    heads += [[f"MTP {i} (frame t+{i})", _fmt(a)] for i, a in enumerate(summary["mtp_acc"], start=1)]
    cb_header = [f"cb{k}" for k in range(len(summary["codebook_acc"]))]
    per_cb = [[_fmt(a) for a in summary["codebook_acc"]]]
    rows = [[r["id"], _fmt(r["wer"]), _fmt(r["first_chunk_latency_s"]), _fmt(r["rtf"]), r["generated_text"], r["asr_hyp"]]
            for r in summary["rows"][:MAX_ROWS]]
    return [
        ("Summary", ["metric", "value"], head),
        ("Teacher-forced accuracy by head (all codebooks)", ["head", "accuracy"], heads),
        ("Backbone accuracy per codebook", cb_header, per_cb),
        (f"Replies (first {min(MAX_ROWS, len(summary['rows']))} of {len(summary['rows'])})",
         ["id", "WER", "first chunk (s)", "RTF", "generated text", "ASR transcript"], rows),
    ]


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict, title: str = "Evaluation") -> str:
    out = [f"# {title}", ""]
    for name, header, rows in tables(summary):
        out += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def render_html(summary: dict, title: str = "Evaluation") -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, header, rows in tables(summary):
        parts.append(f"<h2>{html.escape(name)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    return "\n".join(parts) + "\n"
