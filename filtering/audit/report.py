"""Render the audit: matplotlib PNGs, `audit.json`, and one self-contained HTML page.

PNGs are written next to the page (`plots/*.png`) and also embedded in it as data: URIs,
so the page opens from disk, from an e-mail attachment, or from object storage alike.
Every number on the page has `data-key="path.in.audit.json"`.

    >>> write_report(collect("out/filter"), "out/report")   # report/index.html, audit.json, plots/
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np

from filtering.audit.cells import diff_html as _diff_html, num as _num
from filtering.audit.compare import plot_wer_change
from filtering.audit.figure import plt, png as _png
from filtering.audit.quality import plot_name, plot_quality
from filtering.audit.quality_scores import plot_quality_scores
from filtering.audit.sketch import Sketch
from filtering.audit.sections import compare_html, dedup_html, listen_html, quality_html, quality_scores_html, threshold_html
from filtering.audit.threshold import plot_curve
from tokenization import storage

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.sub{background:#ffe08a}.del{background:#f8b4b4;text-decoration:line-through}.ins{background:#b4f8c8}
.note{background:#fff6d5;padding:4px}tr.run{background:#e8f0ff;font-weight:bold}.ok{color:#0a0}.bad{color:#c00;font-weight:bold}code{font-size:90%}"""


def _hist(series: dict[str, Sketch], title: str, xlabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3))
    data = {k: v for k, v in series.items() if v.n}
    if data:
        merged = Sketch()
        for v in data.values():
            merged.merge(_copy(v))
        bins = np.linspace(merged.lo, merged.hi if merged.hi > merged.lo else merged.lo + 1, 30)
        for k, v in data.items():  # one patch per series (ax.hist draws one per bar: slow with many speakers)
            x, w = v.hist()
            ax.stairs(np.histogram(x, bins=bins, weights=w)[0], bins, fill=True, alpha=0.6, label=f"{k} (n={v.n})")
        for p in (50, 90):
            q = merged.quantile(p)
            ax.axvline(q, color="k", ls="--", lw=0.8)
            ax.text(q, ax.get_ylim()[1] * 0.9, f" p{p}", fontsize=7)
        ax.legend(fontsize=7, loc="upper right", ncol=1 + len(data) // 12)
    else:
        ax.text(0.5, 0.5, "no data", ha="center")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def _copy(s: Sketch) -> Sketch:
    return Sketch().merge(s)


def make_plots(audit: dict) -> dict[str, bytes]:
    s = audit["_series"]
    plots = {}
    plots["wer_hist"] = _hist(dict(sorted(s["wer_by_status"].items())) or {"all": Sketch()}, "WER per scored item (kept vs rejected)", "WER")
    plots["wer_by_speaker"] = _hist(dict(sorted(s["wer_by_speaker"].items())) or {"all": Sketch()}, "WER per speaker", "WER")
    plots["duration_hist"] = _hist({"all": s["duration"]}, "Duration per item", "seconds")
    plots["speaking_rate_hist"] = _hist({"all": s["rate"]}, "Speaking rate", "reference words / second")
    if s["frames"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        n, e = np.asarray(s["frames"], float).T
        ax.scatter(e, n, s=10)
        lim = [0, max(n.max(), e.max()) + 1]
        ax.plot(lim, lim, "k--", lw=0.8, label="n_frames = duration x frame rate")
        ax.set_xlabel("duration x frame rate")
        ax.set_ylabel("n_frames")
        ax.set_title("n_frames vs duration", fontsize=10)
        ax.legend(fontsize=7)
        plots["frames_vs_duration"] = _png(fig)
    cc = s["code_counts"]
    if cc is not None:
        k = cc.shape[0]
        fig, axes = plt.subplots(2, (k + 1) // 2, figsize=(12, 4), sharey=True)
        for i, ax in enumerate(np.ravel(axes)[:k]):
            ax.stairs(cc[i], np.arange(cc.shape[1] + 1), fill=True)  # one patch, not one bar per code
            ax.set_title(f"codebook {i}: {int((cc[i] > 0).sum())} used", fontsize=8)
            ax.tick_params(labelsize=6)
        fig.suptitle("Code usage per codebook (count per code index)", fontsize=10)
        plots["code_usage"] = _png(fig)
    if audit.get("threshold_curve"):
        plots["threshold_curve"] = plot_curve(audit["threshold_curve"])
    if audit.get("compare") and (img := plot_wer_change(audit["compare"])):
        plots["compare_wer"] = img
    d = audit.get("_plot_data", {})
    if audit.get("quality_meta", {}).get("keys"):
        plots.update(plot_quality(d["meta_keys"]))
    if audit.get("quality_scores"):
        plots.update(plot_quality_scores(d["q_values"], d["q_pairs"], audit.get("quality_curves") or {}))
    return plots


def _summary_table(groups: dict, key: str, title: str) -> str:
    cols = ["n", "mean", "p50", "p90", "p95", "p99", "max"]
    rows = "".join(
        f'<tr><td class="l">{html.escape(name)}</td>' + "".join(_num(s.get(c), f"{key}.{name}.{c}") for c in cols) + "</tr>"
        for name, s in groups.items()
    )
    return f"<h3>{html.escape(title)}</h3><table><tr><th class=l></th>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{rows}</table>"


def _lint_html(lint: dict | None) -> str:
    if not lint:
        return ""
    rows = []
    for i, c in enumerate(lint["checks"]):
        status = "skipped" if c["skipped"] else ("pass" if c["passed"] else "FAIL")
        css = "bad" if not c["passed"] else "ok"
        examples = "<br>".join(html.escape(json.dumps(e, ensure_ascii=False)) for e in c["examples"])
        note = html.escape(c["skipped"] or c["fix"])
        rows.append(f'<tr><td class="l"><code>{html.escape(c["name"])}</code></td><td class="{css}">{status}</td>'
                    f'{_num(c["count"], f"lint.checks.{i}.count")}{_num(c["checked"], f"lint.checks.{i}.checked")}'
                    f'<td class="l">{html.escape(c["unit"])}</td><td class="l"><small>{examples}</small></td><td class="l"><small>{note}</small></td></tr>')
    verdict = "all checks pass" if lint["passed"] else "failed: " + ", ".join(lint["failed"])
    return (f'<h2>Dataset lint</h2><p class="{"ok" if lint["passed"] else "bad"}">{html.escape(verdict)}</p>'
            '<table id="lint"><tr><th class=l>check</th><th>status</th><th>count</th><th>checked</th><th class=l>unit</th>'
            f'<th class=l>examples</th><th class=l>fix</th></tr>{"".join(rows)}</table>')


def render_html(audit: dict, plots: dict[str, bytes]) -> str:
    img = lambda name: (f'<img id="plot-{name}" alt="{name}" src="data:image/png;base64,{base64.b64encode(plots[name]).decode()}">'  # noqa: E731
                        if name in plots else "")
    st = audit["stages"]
    stage_cols = ["in", "kept", "rejected", "quarantined", "hours_kept", "hours_rejected"]
    stage_rows = "".join(f'<tr><td class="l">{s["stage"]}</td>' + "".join(_num(s[c], f"stages.{i}.{c}") for c in stage_cols)
                         + f'<td class="{"ok" if s["consistent"] else "bad"}">{"adds up" if s["consistent"] else "MISMATCH"}</td></tr>'
                         for i, s in enumerate(st))
    rej = audit["rejections"]
    reason_rows = "".join(f'<tr><td class="l">{html.escape(k)}</td>{_num(v, f"rejections.by_reason.{k}")}</tr>' for k, v in rej["by_reason"].items())
    examples = "".join(
        f'<tr><td class="l">{html.escape(code)}</td><td class="l"><code>{html.escape(e["id"])}</code></td>'
        f'<td class="l">{html.escape(e["text"] or "")}</td><td class="l">{html.escape(e["asr_hyp"] or "")}</td>'
        f'<td class="l diff">{_diff_html(e["diff"])}</td>{_num(e["wer"], f"rejections.examples.{code}.{i}.wer")}</tr>'
        for code, exs in rej["examples"].items() for i, e in enumerate(exs))
    q = audit["quarantine"]
    q_rows = "".join(f'<tr><td class="l">{html.escape(k)}</td>{_num(v, f"quarantine.by_stage.{k}")}</tr>' for k, v in q["by_stage"].items())
    q_ex = "".join(f'<tr><td class="l"><code>{html.escape(x["utt_id"])}</code></td><td class="l">{html.escape(x["stage"])}</td>'
                   f'<td class="l">{html.escape(x["reason"])}</td></tr>' for x in q["examples"])
    d = audit["duplicates"]
    dup_rows = "".join(f'<tr><td class="l"><code>{g["audio_sha1"][:12]}</code></td><td class="l">{html.escape(", ".join(g["ids"]))}</td></tr>'
                       for g in d["groups"])
    codes = audit["codes"]
    code_rows = "".join(f"<tr>{_num(c['codebook'], f'codes.per_codebook.{i}.codebook')}{_num(c['used'], f'codes.per_codebook.{i}.used')}"
                        f"{_num(c['dead'], f'codes.per_codebook.{i}.dead')}{_num(c['entropy_bits'], f'codes.per_codebook.{i}.entropy_bits')}</tr>"
                        for i, c in enumerate(codes.get("per_codebook", [])))
    fr = audit["frames"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Data audit: {html.escape(audit['folder'])}</title>
<style>{CSS}</style></head><body>
<h1>Data audit</h1>
<p>Folder <code>{html.escape(audit['folder'])}</code>, kind <b>{audit['kind']}</b>, run <code>{html.escape(audit['run_id'])}</code>,
ASR <code>{html.escape(str(audit['asr']))}</code>, codec <code>{html.escape(str(audit['codec'].get('codec_name')))}</code>.</p>
{_lint_html(audit.get("lint"))}
{compare_html(audit.get("compare"), img("compare_wer"))}
<h2>Counts per stage</h2>
<table id="stages"><tr><th class=l>stage</th>{''.join(f'<th>{c}</th>' for c in stage_cols)}<th>in = kept + rejected + quarantined</th></tr>{stage_rows}</table>
<h2>Rejections</h2>
<table id="reasons"><tr><th class=l>reason</th><th>rows</th></tr>{reason_rows}</table>
<h3>Examples (text vs ASR hypothesis; diff on normalized text: <span class=sub>substituted</span> <span class=del>deleted</span> <span class=ins>inserted</span>)</h3>
<table id="examples"><tr><th class=l>reason</th><th class=l>id</th><th class=l>text</th><th class=l>ASR hypothesis</th><th class=l>diff</th><th>WER</th></tr>{examples}</table>
<h2>Quarantine (unreadable input)</h2>
<table id="quarantine"><tr><th class=l>stage</th><th>rows</th></tr>{q_rows}</table>
<table><tr><th class=l>id</th><th class=l>stage</th><th class=l>reason</th></tr>{q_ex}</table>
{listen_html(audit.get("listen"), audit.get("_audio", {}))}
{threshold_html(audit.get("threshold_curve"), img("threshold_curve"))}
{quality_html(audit.get("quality_meta"), {k: img(plot_name(k)) for k in audit.get("quality_meta", {}).get("keys", {})})}
{quality_scores_html(audit.get("quality_curves"), audit.get("quality_scores"), {k: img(k) for k in plots})}
<h2>WER</h2>{img('wer_hist')}{img('wer_by_speaker')}
{_summary_table({'all': audit['wer']['all']}, 'wer', 'All scored items')}
{_summary_table(audit['wer']['by_source'], 'wer.by_source', 'Per source')}
{_summary_table(audit['wer']['by_speaker'], 'wer.by_speaker', 'Per speaker')}
<h2>Duration</h2>{img('duration_hist')}
{_summary_table({'all': audit['duration']['all']}, 'duration', 'All items (seconds)')}
{_summary_table(audit['duration']['by_source'], 'duration.by_source', 'Per source')}
{_summary_table(audit['duration']['by_speaker'], 'duration.by_speaker', 'Per speaker')}
<h2>Speaking rate</h2>{img('speaking_rate_hist')}
{_summary_table({'all': audit['speaking_rate']['all']}, 'speaking_rate', 'Reference words per second')}
<h2>Duplicates by audio_sha1</h2>
<p>Groups: <span data-key="duplicates.n_groups">{d['n_groups']}</span>, rows in them: <span data-key="duplicates.n_rows">{d['n_rows']}</span></p>
<table id="duplicates"><tr><th class=l>audio_sha1</th><th class=l>ids</th></tr>{dup_rows}</table>
{dedup_html(audit.get("dedup"), audit.get("_audio", {}))}
<h2>Codes</h2>{img('code_usage')}
<table id="codes"><tr><th>codebook</th><th>used</th><th>dead</th><th>entropy (bits)</th></tr>{code_rows}</table>
<h2>n_frames vs duration</h2>{img('frames_vs_duration')}
<p>Checked <span data-key="frames.n_checked">{fr['n_checked']}</span>; off by more than one frame:
<span data-key="frames.n_inconsistent" class="{'ok' if fr['n_inconsistent'] == 0 else 'bad'}">{fr['n_inconsistent']}</span>;
max |n_frames - duration x frame rate| <span data-key="frames.max_abs_diff">{fr['max_abs_diff']:g}</span>.</p>
</body></html>"""


def write_report(audit: dict, report_dir: str) -> dict:
    """Write `index.html`, `audit.json` and `plots/*.png` under `report_dir` (local or s3://).

    Returns:
        the audit dict as written to audit.json (plot file names added, raw series dropped).
    """
    plots = make_plots(audit)
    public = {k: v for k, v in audit.items() if not k.startswith("_")}
    public["plots"] = {name: f"plots/{name}.png" for name in plots}
    for name, data in plots.items():
        storage.write_bytes_atomic(storage.join(report_dir, "plots", f"{name}.png"), data)
    storage.write_bytes_atomic(storage.join(report_dir, "audit.json"), json.dumps(public, indent=2).encode())
    storage.write_bytes_atomic(storage.join(report_dir, "index.html"), render_html(audit, plots).encode())
    return public
