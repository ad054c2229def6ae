"""HTML of the auditor's-workflow sections: listen, threshold what-if, compare runs, quality metadata,
the run's quality scores and their what-if curves.

Each takes its part of audit.json (and, for listening, the data URIs kept out of it) and
returns an HTML fragment; numbers carry `data-key` like the rest of the page.
"""

from __future__ import annotations

import html

from filtering.audit.cells import diff_html, num

MAX_LISTED = 100  # moved rows listed in the page (audit.json has them all)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>' if text else ""


def listen_html(part: dict | None, uris: dict[str, str]) -> str:
    if not part or not part["examples"]:
        return ""
    rows = []
    for i, ex in enumerate(part["examples"]):
        for j, c in enumerate(ex["clips"]):
            key = f"{ex['id']}#{c['turn']}"
            player = (f'<audio controls preload="metadata" data-clip="{html.escape(key)}" src="{uris[key]}"></audio>'
                      if key in uris else "")
            head = (f'<td class="l" rowspan="{len(ex["clips"])}">{html.escape(ex["group"])}<br><code>{html.escape(ex["id"])}</code>'
                    f'<br><small>{html.escape(ex["reason"] or ex["status"])}</small></td>') if j == 0 else ""
            rows.append(f'<tr>{head}<td class="l">{html.escape(c["role"])}</td><td class="l">{player}<br><small>{html.escape(c["from"])}</small></td>'
                        f'<td class="l">{html.escape(c["text"])}</td><td class="l">{html.escape(c["asr_hyp"] or "")}</td>'
                        f'<td class="l diff">{diff_html(c.get("diff") or [])}</td>{num(c["wer"], f"listen.examples.{i}.clips.{j}.wer")}'
                        f'{num(c.get("dnsmos_ovrl"), f"listen.examples.{i}.clips.{j}.dnsmos_ovrl")}</tr>')
    notes = "".join(_note(n) for n in part["notes"])
    return (f'<h2>Listen to the examples</h2><p>Clips: <span data-key="listen.n_clips">{part["n_clips"]}</span>, '
            f'<span data-key="listen.bytes">{part["bytes"]}</span> bytes of audio.</p>{notes}'
            '<table id="listen"><tr><th class=l>row</th><th class=l>role</th><th class=l>audio</th><th class=l>transcript</th>'
            f'<th class=l>ASR hypothesis</th><th class=l>diff</th><th>WER</th><th>DNSMOS</th></tr>{"".join(rows)}</table>')


def _threshold_label(r: dict) -> str:
    return ("off" if r["max_wer"] is None else f"{r['max_wer']:g}") + (" (this run)" if r["run"] else "")


def _curve_table(rows: list[dict], key: str, table_id: str) -> str:
    body = "".join(
        f'<tr class="{"run" if r["run"] else ""}"><td class="l">{_threshold_label(r)}</td>{num(r["kept"], f"{key}.{i}.kept")}{num(r["hours_kept"], f"{key}.{i}.hours_kept")}</tr>'
        for i, r in enumerate(rows))
    return f'<table id="{table_id}"><tr><th class=l>max_wer</th><th>kept rows</th><th>kept hours</th></tr>{body}</table>'


def threshold_html(curve: dict | None, img: str) -> str:
    if not curve:
        return ""
    per_source = "".join(f"<h3>Source {html.escape(s)}</h3>{_curve_table(rows, f'threshold_curve.by_source.{s}', f'threshold-{i}')}"
                         for i, (s, rows) in enumerate(curve["by_source"].items()))
    return (f"<h2>Threshold what-if</h2><p>Rows and hours the run would keep at each <code>max_wer</code>, every other rule "
            f"unchanged (this run: {curve['run_max_wer']}).</p>{_note(curve['note'])}{img}"
            f"{_curve_table(curve['rows'], 'threshold_curve.rows', 'threshold')}<details><summary>per source</summary>{per_source}</details>")


def _status(status: str, reason: str) -> str:
    return html.escape(f"{status}: {reason}" if reason else status)


def _moved_table(rows: list[dict], table_id: str) -> str:
    body = "".join(f'<tr><td class="l"><code>{html.escape(r["id"])}</code></td><td class="l">{_status(r["status_a"], r["reason_a"])}</td>'
                   f'<td class="l">{_status(r["status_b"], r["reason_b"])}</td><td>{"" if r["wer_a"] is None else r["wer_a"]}</td>'
                   f'<td>{"" if r["wer_b"] is None else r["wer_b"]}</td></tr>' for r in rows[:MAX_LISTED])
    more = f"<p>{len(rows) - MAX_LISTED} more in audit.json.</p>" if len(rows) > MAX_LISTED else ""
    return (f'<table id="{table_id}"><tr><th class=l>id</th><th class=l>run A</th><th class=l>run B</th><th>WER A</th><th>WER B</th></tr>'
            f"{body}</table>{more}")


def compare_html(cmp: dict | None, img: str) -> str:
    if not cmp:
        return ""
    cols = ["kept", "rejected", "quarantined", "hours_kept"]
    counts = "".join(f'<tr><td class="l">{name}</td>' + "".join(num(cmp["counts"][k][c], f"compare.counts.{k}.{c}") for c in cols) + "</tr>"
                     for k, name in (("a", "run A"), ("b", "run B"), ("delta", "B - A")))
    w = cmp["wer_change"]
    changed = "".join(f'<tr><td class="l"><code>{html.escape(r["id"])}</code></td><td>{r["wer_a"]:g}</td><td>{r["wer_b"]:g}</td>'
                      f'<td>{r["delta"]:+g}</td></tr>' for r in w["rows"][:MAX_LISTED] if r["delta"])
    return (f"<h2>Compare runs</h2><p>Run A <code>{html.escape(cmp['run_a'])}</code>, run B <code>{html.escape(cmp['run_b'])}</code>. "
            f'Shared rows <span data-key="compare.shared">{cmp["shared"]}</span>, only in A <span data-key="compare.only_in_a">{cmp["only_in_a"]}</span>, '
            f'only in B <span data-key="compare.only_in_b">{cmp["only_in_b"]}</span>; kept in both '
            f'<span data-key="compare.kept_in_both">{cmp["kept_in_both"]}</span>, rejected in both '
            f'<span data-key="compare.rejected_in_both">{cmp["rejected_in_both"]}</span>.</p>{_note(cmp["note"])}'
            f'<table id="compare-counts"><tr><th class=l></th>{"".join(f"<th>{c}</th>" for c in cols)}</tr>{counts}</table>'
            f"<h3>Newly kept ({len(cmp['newly_kept'])})</h3>{_moved_table(cmp['newly_kept'], 'newly-kept')}"
            f"<h3>Newly rejected ({len(cmp['newly_rejected'])})</h3>{_moved_table(cmp['newly_rejected'], 'newly-rejected')}"
            + (f"<h3>Other moves ({len(cmp['other_moves'])})</h3>{_moved_table(cmp['other_moves'], 'other-moves')}" if cmp["other_moves"] else "")
            + f'<h3>WER change per shared row</h3><p>Scored in both: <span data-key="compare.wer_change.n">{w["n"]}</span>, changed: '
            f'<span data-key="compare.wer_change.n_changed">{w["n_changed"]}</span>.</p>{img}'
            f'<table id="wer-change"><tr><th class=l>id</th><th>WER A</th><th>WER B</th><th>change</th></tr>{changed}</table>'
            + _quality_change_html(cmp.get("quality_change") or {}))


def _quality_change_html(q: dict) -> str:
    if not q:
        return ""
    cols = ["n", "n_changed", "mean_delta", "kept_mean_a", "kept_mean_b", "kept_mean_delta"]
    body = "".join(f'<tr><td class="l"><code>{c}</code></td>' + "".join(num(v[k], f"compare.quality_change.{c}.{k}") for k in cols) + "</tr>"
                   for c, v in q.items())
    return ("<h3>Quality change</h3><p>Per quality column: shared rows scored in both runs, how many changed, the mean "
            "change (B - A), and the mean over each run's kept rows.</p>"
            f'<table id="quality-change"><tr><th class=l>column</th>{"".join(f"<th>{k}</th>" for k in cols)}</tr>{body}</table>')


def quality_html(q: dict | None, imgs: dict[str, str]) -> str:
    if not q or not q["keys"]:
        return ""
    cols = ["n", "mean", "p5", "p50", "p95"]
    parts = []
    for k, info in q["keys"].items():
        body = "".join(f'<tr><td class="l">{html.escape(s)}</td>' + "".join(num(st.get(c), f"quality_meta.keys.{k}.by_source.{s}.{c}") for c in cols) + "</tr>"
                       for s, st in info["by_source"].items())
        parts.append(f"<h3><code>{html.escape(k)}</code> (Pearson r with WER: "
                     f'{num(info["wer_pearson"], f"quality_meta.keys.{k}.wer_pearson", "span")})</h3>'
                     f"{imgs.get(k, '')}<table><tr><th class=l>source</th>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{body}</table>")
    return (f'<h2>Quality metadata</h2><p>Rows with a <code>meta</code> value: <span data-key="quality_meta.n_rows_with_meta">'
            f'{q["n_rows_with_meta"]}</span>.</p>{"".join(parts)}')


def _q_label(r: dict) -> str:
    return ("off" if r["threshold"] is None else f"{r['threshold']:g}") + (" (this run)" if r["run"] else "")


def _q_curve_table(rule: str, rows: list[dict], key: str, table_id: str) -> str:
    body = "".join(
        f'<tr class="{"run" if r["run"] else ""}"><td class="l">{_q_label(r)}</td>{num(r["kept"], f"{key}.{i}.kept")}'
        f'{num(r["hours_kept"], f"{key}.{i}.hours_kept")}</tr>' for i, r in enumerate(rows))
    return f'<table id="{table_id}"><tr><th class=l>{html.escape(rule)}</th><th>kept rows</th><th>kept hours</th></tr>{body}</table>'


def quality_scores_html(curves: dict | None, scores: dict | None, imgs: dict[str, str]) -> str:
    """The run's DNSMOS / VAD columns: per-source distributions, WER against DNSMOS, the input's DNSMOS against
    ours, and one what-if curve per quality rule."""
    if not scores:
        return ""
    cols = ["n", "mean", "p5", "p50", "p95"]
    dists = []
    for c, info in scores["columns"].items():
        body = "".join(f'<tr><td class="l">{html.escape(src)}</td>' + "".join(num(st.get(k), f"quality_scores.columns.{c}.by_source.{src}.{k}") for k in cols)
                       + "</tr>" for src, st in info["by_source"].items())
        dists.append(f"<h3><code>{c}</code></h3>{imgs.get(f'quality_{c}', '')}"
                     f'<table id="quality-{c}"><tr><th class=l>source</th>{"".join(f"<th>{k}</th>" for k in cols)}</tr>{body}</table>')
    w, m = scores["wer_vs_dnsmos"], scores["meta_dnsmos"]
    meta = "" if not m["n"] else (
        f'<h3>The input\'s DNSMOS (<code>meta.dnsmos</code>) against ours</h3><p>Rows with both: <span data-key="quality_scores.meta_dnsmos.n">{m["n"]}</span>, '
        f'Pearson r {num(m["pearson"], "quality_scores.meta_dnsmos.pearson", "span")}, mean (ours - theirs) '
        f'{num(m["mean_delta"], "quality_scores.meta_dnsmos.mean_delta", "span")}, mean |ours - theirs| '
        f'{num(m["mean_abs_delta"], "quality_scores.meta_dnsmos.mean_abs_delta", "span")}.</p>{imgs.get("meta_dnsmos_vs_ovrl", "")}')
    curve_parts = []
    for rule, curve in (curves or {}).items():
        per_source = "".join(f"<h4>Source {html.escape(src)}</h4>"
                             f"{_q_curve_table(rule, rows, f'quality_curves.{rule}.by_source.{src}', f'quality-curve-{rule}-{i}')}"
                             for i, (src, rows) in enumerate(curve["by_source"].items()))
        curve_parts.append(f"<h3>What-if: <code>{rule}</code> (this run: {curve['run_threshold']})</h3>"
                           f"{imgs.get(f'quality_curve_{rule}', '')}{_q_curve_table(rule, curve['rows'], f'quality_curves.{rule}.rows', f'quality-curve-{rule}')}"
                           f"<details><summary>per source</summary>{per_source}</details>")
    return (f'<h2>Audio quality (DNSMOS, VAD)</h2><p>Per scored clip; a dialogue is judged by its worst scored clip. '
            f'WER against DNSMOS OVRL: <span data-key="quality_scores.wer_vs_dnsmos.n">{w["n"]}</span> clips, Pearson r '
            f'{num(w["pearson"], "quality_scores.wer_vs_dnsmos.pearson", "span")}.</p>{imgs.get("wer_vs_dnsmos", "")}'
            f'{meta}{"".join(curve_parts)}{"".join(dists)}')


def _by_source_table(d: dict, key: str, table_id: str) -> str:
    reasons = sorted({r for v in d.values() for r in v})
    body = "".join(f'<tr><td class="l">{html.escape(src)}</td>' + "".join(num(v[r], f"{key}.{src}.{r}") if r in v else "<td></td>" for r in reasons) + "</tr>"
                   for src, v in sorted(d.items()))
    return f'<table id="{table_id}"><tr><th class=l>source</th>{"".join(f"<th>{html.escape(r)}</th>" for r in reasons)}</tr>{body}</table>'


def dedup_html(part: dict | None, uris: dict[str, str]) -> str:
    """The duplicates section (`--dedup`): counts, rows and hours dropped per source and reason, the largest
    clusters with players of two members, eval overlaps."""
    if not part:
        return ""
    clusters = []
    for i, c in enumerate(part["largest_clusters"]):
        players = "".join(
            (f'<audio controls preload="metadata" data-clip="{html.escape(m["clip"])}" src="{uris[m["clip"]]}"></audio>'
             if m.get("clip") in uris else "") + f'<br><small>{"kept" if m["keep"] else "dropped"}: <code>{html.escape(m["utt_id"])}</code></small><br>'
            for m in c.get("players", []))
        members = "<br>".join(f'<code>{html.escape(m["utt_id"])}</code> {"kept" if m["keep"] else html.escape(m["reason"])}'
                              f' <small>{html.escape(m["folder"])}</small>' for m in c["members"])
        clusters.append(f'<tr><td class="l"><code>{c["cluster_id"]}</code></td>{num(c["cluster_size"], f"dedup.largest_clusters.{i}.cluster_size")}'
                        f'<td class="l">{players}</td><td class="l"><small>{members}</small></td></tr>')
    evals = "".join(f'<tr><td class="l"><code>{html.escape(r["utt_id"])}</code></td><td class="l"><small>{html.escape(r["folder"])}</small></td>'
                    f'<td class="l"><code>{html.escape(r["matched_utt_id"])}</code></td><td class="l"><small>{html.escape(r["matched_folder"])}</small></td>'
                    f'{num(r["score"], f"dedup.eval_overlaps.rows.{i}.score")}</tr>' for i, r in enumerate(part["eval_overlaps"]["rows"]))
    d = part["decisions"]
    reasons = "".join(f'<tr><td class="l">{html.escape(r)}</td>{num(n, f"dedup.decisions.by_reason.{r}")}</tr>' for r, n in d["by_reason"].items())
    notes = "".join(_note(n) for n in part["notes"])
    return (f'<h2 id="dedup">Duplicates (pipelines.dedup)</h2><p>Dedup output <code>{html.escape(part["folder"])}</code>: '
            f'<span data-key="dedup.rows">{part["rows"]}</span> rows, <span data-key="dedup.clusters">{part["clusters"]}</span> clusters; '
            f'decisions <span data-key="dedup.decisions.rows">{d["rows"]}</span>, dropped <span data-key="dedup.decisions.dropped">{d["dropped"]}</span>.</p>'
            f'<table id="dedup-reasons"><tr><th class=l>reason</th><th>rows</th></tr>{reasons}</table>'
            f'<h3>Rows dropped per source</h3>{_by_source_table(part["dropped_rows_by_source"], "dedup.dropped_rows_by_source", "dedup-rows")}'
            f'<h3>Hours dropped per source</h3>{_by_source_table(part["dropped_hours_by_source"], "dedup.dropped_hours_by_source", "dedup-hours")}'
            f'<h3>Largest clusters</h3>{notes}<table id="dedup-clusters"><tr><th class=l>cluster</th><th>size</th><th class=l>listen (two members)</th>'
            f'<th class=l>members</th></tr>{"".join(clusters)}</table>'
            f'<h3>Eval overlaps (<span data-key="dedup.eval_overlaps.n">{part["eval_overlaps"]["n"]}</span>)</h3>'
            f'<table id="dedup-eval"><tr><th class=l>training row</th><th class=l>folder</th><th class=l>eval row</th><th class=l>eval folder</th>'
            f'<th>score</th></tr>{evals}</table>')
