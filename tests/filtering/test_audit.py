"""The audit report on filter and tokenize folders (local and s3://), checked in headless Chromium."""

import html
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from filtering.audit import AuditOptions, ListenOptions, audit
from filtering.quality import QUALITY_COLUMNS
from filtering.rules import QUALITY_RULES
from filtering.sample_dialogues import NOISY_ID, expected_outcomes, quality_args
from tests.filtering.conftest import FILTER_ARGS, JOB_ENV, ROOT, run_module

pytestmark = pytest.mark.slow


EVAL_ID = "librispeech-test-clean/1089-134686-0000"


@pytest.fixture(scope="module")
def dedup_out(filter_out, tmp_path_factory):
    """A pipelines.dedup output over the filter run, written as that job writes it (decisions/*.parquet with an
    extra column the reader must ignore, _summary.json): the sample's real duplicate pair as an exact cluster
    of three with a near copy, an eval overlap, a member in a folder that is gone, singletons kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, folder = tmp_path_factory.mktemp("dedup"), str(filter_out[0])
    gone = str(out / "gone_folder")

    def row(uid, cluster, size, keep, reason="", score=1.0, matched="", where=folder, matched_folder=""):
        return {"utt_id": uid, "folder": where, "cluster_id": cluster, "cluster_size": size, "keep": keep, "reason": reason,
                "score": score, "matched_utt_id": matched, "matched_folder": matched_folder or (folder if matched else ""),
                "minhash_band": 7}
    rows = [row("d04", 0, 3, True), row("d10_duplicate", 0, 3, False, "exact_audio", 1.0, "d04"),
            row("d02", 0, 3, False, "near_audio", 0.91, "d04"), row("d05", 1, 2, True), row("x99", 1, 2, False, "near_audio", 0.88, "d05", gone),
            row("d06", 2, 1, False, "eval_overlap", 0.97, EVAL_ID, matched_folder="s3://evals/librispeech"),
            *(row(f"d0{i}", 3 + i, 1, True) for i in (1, 3, 7, 8, 9))]
    table = pa.Table.from_pylist(rows).cast(pa.schema([("utt_id", pa.string()), ("folder", pa.string()), ("cluster_id", pa.int64()),
                                                       ("cluster_size", pa.int32()), ("keep", pa.bool_()), ("reason", pa.string()),
                                                       ("score", pa.float64()), ("matched_utt_id", pa.string()),
                                                       ("matched_folder", pa.string()), ("minhash_band", pa.int64())]))
    (out / "decisions").mkdir()
    pq.write_table(table.slice(0, 4), out / "decisions" / "part-00000.parquet")
    pq.write_table(table.slice(4), out / "decisions" / "part-00001.parquet")
    (out / "_summary.json").write_text(json.dumps({
        "rows": len(rows), "clusters": 8, "units_new": 1,
        "dropped_rows_by_source": {"sample": {"exact_audio": 1, "near_audio": 1, "eval_overlap": 1}, "other": {"near_audio": 1}},
        "dropped_hours_by_source": {"sample": {"exact_audio": 0.0011, "near_audio": 0.0009, "eval_overlap": 0.0012},
                                    "other": {"near_audio": 0.0004}}}))
    return out


@pytest.fixture(scope="module")
def filter_report(filter_out, dedup_out, tmp_path_factory):
    out, _ = filter_out
    report = tmp_path_factory.mktemp("report")
    return audit(str(out), str(report), options=AuditOptions(ListenOptions(codec="tiny"), dedup=str(dedup_out))), report


def test_dedup_section(filter_report, dedup_out):
    d = filter_report[0]["dedup"]
    assert (d["rows"], d["clusters"], d["decisions"]) == (11, 8, {"rows": 11, "dropped": 4, "by_reason": {
        "eval_overlap": 1, "exact_audio": 1, "near_audio": 2}})
    assert d["dropped_hours_by_source"]["sample"]["exact_audio"] == 0.0011
    big, pair = d["largest_clusters"]  # clusters of one are not listed
    assert (big["cluster_id"], big["cluster_size"], pair["cluster_size"]) == (0, 3, 2)
    assert [m["utt_id"] for m in big["members"]] == ["d04", "d02", "d10_duplicate"]  # the kept one first
    assert big["members"][2]["reason"] == "exact_audio" and big["members"][1]["score"] == 0.91
    assert [(p["utt_id"], p["played"]) for p in big["players"]] == [("d04", "shard FLAC"), ("d02", "shard FLAC")]
    assert all(p["seconds"] > 0 and p["bytes"] > 0 for p in big["players"])
    assert [p.get("clip") is not None for p in pair["players"]] == [True, False]  # x99's folder is gone
    assert any("not found" in n for n in d["notes"]) and d["n_clips"] == 3
    assert d["eval_overlaps"]["n"] == 1 and d["eval_overlaps"]["rows"][0]["matched_utt_id"] == EVAL_ID
    assert "data:audio/" not in json.dumps(d)


def test_dedup_folder_errors_name_the_folder(filter_out, tmp_path):
    from filtering.audit.dedup import dedup_section
    from tokenization.errors import UserError

    with pytest.raises(UserError, match=r"--dedup .*: no _summary\.json"):
        dedup_section(str(tmp_path), ListenOptions())
    (tmp_path / "_summary.json").write_text("{}")
    with pytest.raises(UserError, match=r"no decisions/\*\.parquet"):
        dedup_section(str(tmp_path), ListenOptions())


def test_filter_audit_figures(filter_report, filter_out):
    a, report = filter_report
    m = json.loads((filter_out[0] / "_manifest.json").read_text())
    s = a["stages"][0]
    assert a["kind"] == "filter-dialogue" and s["consistent"]
    assert (s["in"], s["kept"], s["rejected"], s["quarantined"]) == tuple(m["counts"][k] for k in ("in", "kept", "rejected", "quarantined"))
    assert s["hours_kept"] == pytest.approx(m["counts"]["hours_kept"], abs=1e-5)
    assert a["rejections"]["by_reason"] == m["reject_reasons"]
    ex = a["rejections"]["examples"]["wer"]
    assert ex and all(e["text"] and any(op["op"] != "equal" for op in e["diff"]) for e in ex)
    assert a["quarantine"]["by_stage"] == {"load": 1}
    assert a["duplicates"]["n_groups"] == 1 and sorted(a["duplicates"]["groups"][0]["ids"]) == ["d04", "d10_duplicate"]
    n_scored = m["counts"]["kept"] + m["counts"]["rejected"] + 2  # one assistant turn per dialogue, two in d09 and m04
    assert set(a["wer"]["by_speaker"]) == {"asst_f", "asst_m"} and a["wer"]["all"]["n"] == n_scored
    assert {"p50", "p90", "p99"} <= set(a["duration"]["all"]) and a["speaking_rate"]["all"]["n"] == n_scored
    assert len(a["codes"]["per_codebook"]) == 8 and all(c["used"] + c["dead"] == a["codes"]["codebook_size"] for c in a["codes"]["per_codebook"])
    assert a["frames"]["n_checked"] == 11 and a["frames"]["n_inconsistent"] == 0  # assistant turns of kept dialogues
    assert set(a["plots"]) == {"wer_hist", "wer_by_speaker", "duration_hist", "speaking_rate_hist", "frames_vs_duration", "code_usage",
                               "threshold_curve", "wer_vs_dnsmos", *(f"quality_{c}" for c in QUALITY_COLUMNS),
                               *(f"quality_curve_{r}" for r in QUALITY_RULES)}
    for rel in a["plots"].values():
        assert (report / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((report / "audit.json").read_text())["stages"] == a["stages"]


def test_tokenize_audit(tokenize_out, tmp_path):
    folder, _ = tokenize_out
    a = audit(str(folder), str(tmp_path / "report"))
    s = a["stages"][0]
    assert a["kind"] == "tokenize" and (s["in"], s["kept"], s["rejected"], s["quarantined"]) == (8, 7, 0, 1)
    assert a["frames"]["n_checked"] == 7 and a["frames"]["n_inconsistent"] == 0
    assert len(a["codes"]["per_codebook"]) == 8 and a["codes"]["n_frames_total"] > 0
    assert a["wer"]["all"] == {"n": 0} and a["duration"]["all"]["n"] == 7
    assert (tmp_path / "report" / "index.html").exists()


def test_threshold_curve_reproduces_the_run(filter_report, filter_out):
    a, _ = filter_report
    m = json.loads((filter_out[0] / "_manifest.json").read_text())
    curve = a["threshold_curve"]
    (own,) = [r for r in curve["rows"] if r["run"]]
    assert own["max_wer"] == m["rules"]["max_wer"] == curve["run_max_wer"]
    assert own["kept"] == m["counts"]["kept"] and own["hours_kept"] == pytest.approx(m["counts"]["hours_kept"], abs=1e-5)
    kept = [r["kept"] for r in curve["rows"]]
    assert kept == sorted(kept) and curve["n_unscored_rejects"] == 0 and curve["note"] == ""
    assert sum(rows[-1]["kept"] for rows in curve["by_source"].values()) == curve["rows"][-1]["kept"]
    # rows rejected by a rule other than WER stay rejected whatever the threshold
    assert curve["rows"][-1]["kept"] < m["counts"]["kept"] + m["counts"]["rejected"]


def _turns(folder) -> dict[str, tuple[str, list[dict]]]:
    import pyarrow.dataset as pads

    files = [str(f) for sub in ("kept", "rejects") for f in sorted((folder / sub).glob("*.parquet"))]
    rows = pads.dataset(files, format="parquet").to_table(columns=["dialogue_id", "turns", "keep"]).to_pylist()
    return {r["dialogue_id"]: ("kept" if r["keep"] else "rejected", r["turns"]) for r in rows}


def test_quality_curves_reproduce_the_run_and_scores_match_the_shards(filter_report, filter_out):
    import numpy as np

    a, _ = filter_report
    m = json.loads((filter_out[0] / "_manifest.json").read_text())
    curves = a["quality_curves"]
    assert set(curves) == set(QUALITY_RULES)
    for rule, curve in curves.items():
        assert curve["run_threshold"] == m["rules"][rule]
        own = [r for r in curve["rows"] if r["run"]]
        if curve["run_threshold"] is None:
            assert not own and curve["rows"][-1]["kept"] == m["counts"]["kept"]  # a rule the run did not apply
        else:
            assert len(own) == 1 and own[0]["kept"] == m["counts"]["kept"]
            assert own[0]["hours_kept"] == pytest.approx(m["counts"]["hours_kept"], abs=1e-5)
    # Switched off, min_dnsmos_ovrl lets in exactly the dnsmos rejects whose transcript was right: the noisy answer.
    rows = _turns(filter_out[0])
    (off,) = [r for r in curves["min_dnsmos_ovrl"]["rows"] if r["threshold"] is None]
    assert off["kept"] == m["counts"]["kept"] + 1 and expected_outcomes(quality=True)[NOISY_ID] == "reject"
    ovrl = curves["min_dnsmos_ovrl"]["rows"]
    assert [r["kept"] for r in ovrl[:-1]] == sorted((r["kept"] for r in ovrl[:-1]), reverse=True)  # stricter keeps fewer
    clips = [t for _, turns in rows.values() for t in turns if t["role"] == "assistant" and t["wer"] is not None]
    scores = a["quality_scores"]
    assert scores["columns"]["dnsmos_ovrl"]["all"]["n"] == len(clips)
    assert scores["columns"]["dnsmos_ovrl"]["all"]["min"] == pytest.approx(min(t["dnsmos_ovrl"] for t in clips), abs=1e-4)
    pairs = np.asarray([(t["dnsmos_ovrl"], t["wer"]) for t in clips])
    assert scores["wer_vs_dnsmos"]["n"] == len(clips)
    assert scores["wer_vs_dnsmos"]["pearson"] == pytest.approx(np.corrcoef(pairs.T)[0, 1], abs=1e-3)


def test_listen_players_data(filter_report, filter_out):
    a, report = filter_report
    listen = a["listen"]
    groups = {e["group"] for e in listen["examples"]}
    assert {"rejected: wer", "rejected: dnsmos", "lowest DNSMOS kept", "lint: duplicate_audio"} <= groups and len(listen["examples"]) <= 20
    rows = _turns(filter_out[0])
    kept_ovrl = sorted((min(t["dnsmos_ovrl"] for t in turns if t["dnsmos_ovrl"] is not None), did)
                       for did, (status, turns) in rows.items() if status == "kept")
    lowest = [e["id"] for e in listen["examples"] if e["group"] == "lowest DNSMOS kept"]
    assert lowest and lowest[0] == kept_ovrl[0][1]  # the lowest-scoring kept dialogue is offered first
    for e in listen["examples"]:
        assert [c["role"] for c in e["clips"]][:2] == ["user", "assistant"]
        for c in e["clips"]:
            assert c["from"] == "shard FLAC" and c["seconds"] > 0 and c["bytes"] > 0
            assert ("diff" in c) == (c["role"] == "assistant") and c["text"]
            assert (c["dnsmos_ovrl"] is not None) == (c["role"] == "assistant")
    assert listen["n_clips"] == sum(len(e["clips"]) for e in listen["examples"])
    assert listen["bytes"] == sum(c["bytes"] for e in listen["examples"] for c in e["clips"])
    assert "data:audio/" not in (report / "audit.json").read_text()  # the audio lives in the page only


def test_audio_caps_say_so(filter_out, tmp_path):
    a = audit(str(filter_out[0]), str(tmp_path / "r"), options=AuditOptions(ListenOptions(max_examples=2, max_bytes=12_000)))
    listen = a["listen"]
    assert len(listen["examples"]) == 2 and 0 < listen["bytes"] <= 12_000
    assert any("size cap" in n for n in listen["notes"]) and any("--max-audio-examples 2" in n for n in listen["notes"])
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count("<audio ") == listen["n_clips"] and "not embedded: audio size cap reached" in page


def test_clip_from_codes_with_the_run_codec(filter_out):
    import pyarrow.parquet as pq

    from filtering.audit.listen import ClipAudio

    row = pq.read_table(sorted((filter_out[0] / "kept").glob("*.parquet"))[0]).slice(0, 1).to_pylist()[0]
    turn = {**row["turns"][1], "audio_flac": None}  # an assistant turn stored as codes only
    samples, rate, route = ClipAudio(ListenOptions(codec="tiny"), {}).get(row["dialogue_id"], 1, turn)
    assert route.startswith("decoded with codec") and rate == 24000
    assert len(samples) == turn["n_frames"] * rate / 12.5 and float(abs(samples).max()) > 0
    none, _, why = ClipAudio(ListenOptions(), {}).get(row["dialogue_id"], 1, turn)
    assert none is None and "--codec" in why


def _kept_ids(folder) -> dict[str, str]:
    import pyarrow.parquet as pq

    out = {}
    for sub in ("kept", "rejects"):
        for f in (folder / sub).glob("*.parquet"):
            t = pq.read_table(f, columns=["dialogue_id", "reject_reason", "wer"]).to_pylist()
            out.update({r["dialogue_id"]: (sub, r["reject_reason"], r["wer"]) for r in t})
    return out


@pytest.fixture(scope="module")
def second_run(filter_out, dialogue_sample, tmp_path_factory):
    """The same sample filtered again with a looser --max-wer (the one extra filter job of this module)."""
    out = tmp_path_factory.mktemp("filter_b")
    run_module("pipelines.filter", "--input", str(dialogue_sample), "--output", str(out), "--max-wer", "1.0", *FILTER_ARGS,
               *quality_args(dialogue_sample))
    report = tmp_path_factory.mktemp("compare_report")
    summary = run_module("pipelines.audit", str(out), "--compare", str(filter_out[0]), "--report", str(report),
                         "--audio-manifest", str(dialogue_sample))
    return out, report, summary


def test_compare_lists_exactly_the_rows_that_moved(second_run, filter_out, filter_report):
    out_b, report, summary = second_run
    a_rows, b_rows = _kept_ids(filter_out[0]), _kept_ids(out_b)
    cmp = json.loads((report / "audit.json").read_text())["compare"]
    kept_a = {i for i, r in a_rows.items() if r[0] == "kept"}
    kept_b = {i for i, r in b_rows.items() if r[0] == "kept"}
    assert kept_b - kept_a, "a looser threshold must let some rejected row in"
    assert sorted(r["id"] for r in cmp["newly_kept"]) == sorted(kept_b - kept_a)
    assert sorted(r["id"] for r in cmp["newly_rejected"]) == sorted(kept_a - kept_b)
    for r in cmp["newly_kept"]:
        assert (r["reason_a"], r["reason_b"]) == (a_rows[r["id"]][1], "") and r["status_a"] == "rejected"
    n = len(expected_outcomes(quality=True))
    assert cmp["kept_in_both"] == len(kept_a & kept_b) and (cmp["shared"], cmp["only_in_a"], cmp["only_in_b"]) == (n, 0, 0)
    both = [i for i in a_rows.keys() & b_rows.keys() if a_rows[i][2] is not None and b_rows[i][2] is not None]
    changed = [i for i in both if abs(a_rows[i][2] - b_rows[i][2]) > 1e-6]
    assert cmp["wer_change"]["n_changed"] == len(changed) and cmp["wer_change"]["n"] == len(both) > 0
    ma, mb = (json.loads((f / "_manifest.json").read_text())["counts"] for f in (filter_out[0], out_b))
    assert cmp["counts"]["delta"]["kept"] == mb["kept"] - ma["kept"] == summary["compare"]["delta"]["kept"]
    assert cmp["counts"]["delta"]["hours_kept"] == pytest.approx(mb["hours_kept"] - ma["hours_kept"], abs=2e-5)
    # run A's what-if at run B's threshold predicted run B
    (at_b,) = [r for r in filter_report[0]["threshold_curve"]["rows"] if r["max_wer"] == 1.0]
    assert at_b["kept"] == mb["kept"] and at_b["hours_kept"] == pytest.approx(mb["hours_kept"], abs=1e-5)
    # the same audio scored twice: no quality change per row; run B's kept rows (WER rejects let in) move the mean
    q = cmp["quality_change"]["dnsmos_ovrl"]
    assert q["n"] == n - 1 and q["n_changed"] == 0 and q["mean_delta"] == 0.0  # the quarantined row has no score
    tb = _turns(out_b)
    worst_b = [min(t["dnsmos_ovrl"] for t in turns if t["dnsmos_ovrl"] is not None) for s, turns in tb.values() if s == "kept"]
    assert q["kept_mean_b"] == pytest.approx(sum(worst_b) / len(worst_b), abs=1e-4)
    assert q["kept_mean_delta"] == pytest.approx(q["kept_mean_b"] - q["kept_mean_a"], abs=2e-4)
    page = (report / "index.html").read_text()
    assert all(f"<code>{r['id']}</code>" in page for r in cmp["newly_kept"])
    clips = [c for e in json.loads((report / "audit.json").read_text())["listen"]["examples"] for c in e["clips"]]
    assert {c["from"] for c in clips if c["role"] == "assistant"} == {"source file"}


def test_ray_scan_equals_the_in_process_scan(second_run, filter_out, dialogue_sample, tmp_path):
    """The CLI scanned run B with Ray tasks (8 hash parts); the library in this process (one part): the same audit.json."""
    out_b, report, summary = second_run
    assert summary["scan"] == "ray"
    audit(str(out_b), str(tmp_path / "r"), options=AuditOptions(ListenOptions(audio_manifest=str(dialogue_sample)), compare=str(filter_out[0])))
    assert json.loads((report / "audit.json").read_text()) == json.loads((tmp_path / "r" / "audit.json").read_text())


def test_compare_counts_rows_not_shared(filter_out):
    from filtering.audit.compare import compare_runs, read_facts

    facts = read_facts(str(filter_out[0]))
    c = compare_runs(facts[2:], facts, "a", "b")
    assert (c["shared"], c["only_in_a"], c["only_in_b"]) == (len(facts) - 2, 0, 2) and "2 only in run B" in c["note"]
    assert not c["newly_kept"] and not c["newly_rejected"] and c["counts"]["delta"]["kept"] == sum(
        f.status == "kept" for f in facts[:2])


def _copy_with(folder, tmp_path, edit):
    """A copy of a filter output whose kept/rejects tables went through `edit(table) -> table`."""
    import pyarrow.parquet as pq

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    for f in list((dst / "kept").glob("*.parquet")) + list((dst / "rejects").glob("*.parquet")):
        t = pq.read_table(f)
        pq.write_table(edit(t).replace_schema_metadata(t.schema.metadata), f)
    return dst


def test_threshold_note_for_rejects_without_scores(filter_out, tmp_path):
    import pyarrow as pa

    def drop_scores(t):
        if t.column("keep")[0].as_py():
            return t
        return t.set_column(t.schema.get_field_index("wer"), "wer", pa.nulls(t.num_rows, pa.float32()))

    m = json.loads((filter_out[0] / "_manifest.json").read_text())
    a = audit(str(_copy_with(filter_out[0], tmp_path, drop_scores)), str(tmp_path / "r"), options=AuditOptions(ListenOptions(max_examples=0)))
    curve = a["threshold_curve"]
    assert curve["n_unscored_rejects"] == m["counts"]["rejected"] - m["reject_reasons"].get("no_scored_turn", 0)
    assert "without WER scores" in curve["note"] and html.escape(curve["note"]) in (tmp_path / "r" / "index.html").read_text()
    assert all(r["kept"] == m["counts"]["kept"] for r in curve["rows"])


def test_quality_metadata_per_source_and_against_wer(filter_out, tmp_path):
    import numpy as np
    import pyarrow as pa

    values = {}

    def add_meta(t):
        ids = t.column("dialogue_id").to_pylist()
        metas = []
        for i, did in enumerate(ids):
            if did.endswith("duplicate"):
                metas.append(None)  # nullable: rows without metadata
                continue
            values[did] = round(2.5 + (sum(map(ord, did)) % 20) / 10, 2)
            metas.append(json.dumps({"dnsmos": values[did], "lang_id": "en"}))
        return t.append_column("meta", pa.array(metas, pa.string()))

    a = audit(str(_copy_with(filter_out[0], tmp_path, add_meta)), str(tmp_path / "r"), options=AuditOptions(ListenOptions(max_examples=0)))
    q = a["quality_meta"]
    assert q["n_rows_with_meta"] == len(values) and list(q["keys"]) == ["dnsmos"]
    (src,) = q["keys"]["dnsmos"]["by_source"].values()
    v = np.asarray(list(values.values()))
    assert src["n"] == len(v) and src["mean"] == pytest.approx(v.mean(), abs=1e-3) and src["p50"] == pytest.approx(np.median(v), abs=1e-3)
    wer = {i: r[2] for i, r in _kept_ids(filter_out[0]).items()}
    pairs = np.asarray([(values[i], wer[i]) for i in values if wer.get(i) is not None])
    assert q["keys"]["dnsmos"]["n_with_wer"] == len(pairs)
    assert q["keys"]["dnsmos"]["wer_pearson"] == pytest.approx(np.corrcoef(pairs.T)[0, 1], abs=1e-3)
    assert (tmp_path / "r" / a["plots"]["meta_dnsmos"]).read_bytes()[:4] == b"\x89PNG"
    # Emilia's `meta.dnsmos` against our own dnsmos_ovrl (the row's worst scored clip), where both exist
    ours = {did: min(t["dnsmos_ovrl"] for t in turns if t["dnsmos_ovrl"] is not None)
            for did, (_, turns) in _turns(filter_out[0]).items()}
    both = np.asarray([(values[i], ours[i]) for i in values if i in ours])
    md = a["quality_scores"]["meta_dnsmos"]
    assert md["n"] == len(both) > 2 and md["pearson"] == pytest.approx(np.corrcoef(both.T)[0, 1], abs=1e-3)
    assert md["mean_abs_delta"] == pytest.approx(np.abs(both[:, 1] - both[:, 0]).mean(), abs=1e-3)
    assert (tmp_path / "r" / a["plots"]["meta_dnsmos_vs_ovrl"]).read_bytes()[:4] == b"\x89PNG"


def test_bad_meta_names_file_and_row(filter_out, tmp_path):
    import pyarrow as pa

    from tokenization.errors import UserError

    folder = _copy_with(filter_out[0], tmp_path, lambda t: t.append_column("meta", pa.array(["{oops"] * t.num_rows, pa.string())))
    with pytest.raises(UserError, match=r"\.parquet: row \S+: `meta` is not JSON"):
        audit(str(folder), str(tmp_path / "r"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_audit_reads_s3(filter_out, filter_report, tmp_path):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket="data")
        out = filter_out[0]
        for f in out.rglob("*"):
            if f.is_file():
                s3.upload_file(str(f), "data", f"filtered/{f.relative_to(out)}")
        proc = subprocess.run([sys.executable, "-m", "pipelines.audit", "s3://data/filtered", "--report", "s3://data/report"],
                              cwd=ROOT, capture_output=True, text=True, env={**os.environ, **JOB_ENV, **env}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        remote = json.loads(s3.get_object(Bucket="data", Key="report/audit.json")["Body"].read())
        assert s3.get_object(Bucket="data", Key="report/index.html")["Body"].read().startswith(b"<!doctype html>")
    finally:
        server.stop()
    local = filter_report[0]
    for key in ("stages", "rejections", "duplicates", "codes", "frames", "wer"):
        assert remote[key] == local[key], key


def _lookup(data, key: str):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _fmt(v) -> str:
    return "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def _chrome(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


# Resolves with the clip's duration once the browser decoded its header (-1 on a decode error).
DURATION_JS = """const a = arguments[0], done = arguments[arguments.length - 1];
if (a.readyState >= 1) { done(a.duration); return; }
a.addEventListener('loadedmetadata', () => done(a.duration));
a.addEventListener('error', () => done(-1));
a.load();"""


def _check_page(driver, a):
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, "[data-key]")
    for cell in cells:  # every number on the page is the one in audit.json (textContent: also in closed <details>)
        key = cell.get_attribute("data-key")
        assert cell.get_attribute("textContent").strip() == _fmt(_lookup(a, key)), key
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] if hasattr(driver, "get_log") else []
    assert not errors, errors
    return cells


def test_report_renders_in_headless_chromium(filter_report, tmp_path):
    from selenium.webdriver.common.by import By

    a, report = filter_report
    driver = _chrome(tmp_path)
    try:
        driver.get((report / "index.html").as_uri())
        assert driver.title.startswith("Data audit")
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == len(a["plots"])
        for img in images:  # every plot decoded and laid out
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img), img.get_attribute("alt")
            assert img.size["width"] > 100
        assert len(_check_page(driver, a)) > 50
        players = driver.find_elements(By.CSS_SELECTOR, "#listen audio")
        assert len(players) == a["listen"]["n_clips"] > 0
        assert all(p.get_attribute("src").startswith("data:audio/ogg;base64,") for p in players)
        clips = {f"{e['id']}#{c['turn']}": c for e in a["listen"]["examples"] for c in e["clips"]}
        driver.set_script_timeout(30)
        for p in players[:3]:  # the browser decodes the clip and knows how long it is
            duration = driver.execute_async_script(DURATION_JS, p)
            assert duration == pytest.approx(clips[p.get_attribute("data-clip")]["seconds"], abs=0.1)
        assert "(this run)" in driver.find_element(By.CSS_SELECTOR, "#threshold tr.run").text
        for rule, curve in a["quality_curves"].items():  # each quality what-if, the run's threshold row marked
            rows = driver.find_elements(By.CSS_SELECTOR, f"#quality-curve-{rule} tr.run")
            assert len(rows) == (curve["run_threshold"] is not None) and all("(this run)" in r.text for r in rows)
        for name in ("wer_vs_dnsmos", "quality_dnsmos_ovrl", "quality_curve_min_dnsmos_ovrl"):
            assert driver.find_element(By.ID, f"plot-{name}").size["width"] > 100
        assert driver.find_elements(By.CSS_SELECTOR, "#quality-dnsmos_ovrl td[data-key]")
        stages = driver.find_element(By.ID, "stages").text
        assert "adds up" in stages and "MISMATCH" not in stages
        assert driver.find_elements(By.CSS_SELECTOR, "#examples .del, #examples .sub, #examples .ins")
        assert driver.find_elements(By.CSS_SELECTOR, "#listen .del, #listen .sub, #listen .ins")
        # the duplicates section (--dedup): a player per played cluster member, each decoding to its clip's length
        dedup = driver.find_elements(By.CSS_SELECTOR, "#dedup-clusters audio")
        played = {p["clip"]: p for c in a["dedup"]["largest_clusters"] for p in c["players"] if p.get("clip")}
        assert len(dedup) == a["dedup"]["n_clips"] == len(played) == 3
        for p in dedup:
            duration = driver.execute_async_script(DURATION_JS, p)
            assert duration == pytest.approx(played[p.get_attribute("data-clip")]["seconds"], abs=0.1)
        assert EVAL_ID in driver.find_element(By.ID, "dedup-eval").text
        assert driver.find_element(By.ID, "dedup").text == "Duplicates (pipelines.dedup)"
    finally:
        driver.quit()


def test_compare_report_renders_in_headless_chromium(second_run, tmp_path):
    from selenium.webdriver.common.by import By

    _, report, _ = second_run
    a = json.loads((report / "audit.json").read_text())
    driver = _chrome(tmp_path)
    try:
        driver.get((report / "index.html").as_uri())
        _check_page(driver, a)
        moved = driver.find_element(By.ID, "newly-kept").text
        assert "dnsmos_ovrl" in driver.find_element(By.ID, "quality-change").text
        assert all(r["id"] in moved for r in a["compare"]["newly_kept"])
        assert driver.find_element(By.ID, "plot-compare_wer").get_attribute("src").startswith("data:image/png")
    finally:
        driver.quit()


def test_clip_from_a_source_span_plays_only_the_span(tmp_path):
    """A segment manifest's clip (a span of a longer file) is played as the span, not the whole file."""
    import numpy as np
    import soundfile as sf

    from filtering.audit.listen import ClipAudio
    from tokenization.units import AudioRef

    rate = 16000
    sf.write(tmp_path / "long.wav", np.linspace(-0.5, 0.5, 4 * rate, dtype=np.float32), rate)
    span = AudioRef(path=str(tmp_path / "long.wav"), start_s=1.0, duration_s=1.5)
    samples, got_rate, route = ClipAudio(ListenOptions(), {"u1": [span]}).get("u1", 0, {"role": "tts"})
    assert route == "source file" and got_rate == rate and len(samples) == int(1.5 * rate)


def test_source_audio_is_found_in_webdataset_tars(tmp_path):
    """`--audio-manifest` naming a folder of Emilia-style tars: the listen lookup goes through the unit readers,
    finds the picked id in the second tar and plays its embedded audio (not codes, not another sample's)."""
    import numpy as np

    from filtering.audit.listen import ClipAudio, _source_refs
    from tokenization.dialogue_schema import FILTER_TTS, TTS
    from tests.corpora import _emilia, _tar, encode

    rate = 16000
    tones = {k: (0.3 * np.sin(2 * np.pi * f * np.arange(n) / rate)).astype(np.float32)
             for k, f, n in (("EN_W0", 220.0, rate), ("EN_W1", 330.0, rate // 2), ("EN_W2", 440.0, 3 * rate // 4))}
    _tar(tmp_path / "EN" / "EN-B000000.tar", [(f"EN_W0.{e}", d) for e, d in (("json", _emilia("EN_W0", "a", "s")),
                                                                              ("flac", encode(tones["EN_W0"], rate, "FLAC")))])
    _tar(tmp_path / "EN" / "EN-B000001.tar", [m for k in ("EN_W1", "EN_W2") for m in
                                              ((f"{k}.json", _emilia(k, "b", "s")), (f"{k}.flac", encode(tones[k], rate, "FLAC")))])
    refs = _source_refs(FILTER_TTS, str(tmp_path / "EN"), {"EN_W2"})
    assert set(refs) == {"EN_W2"} and refs["EN_W2"][0].data is not None  # only the picked row's audio is kept
    samples, got_rate, route = ClipAudio(ListenOptions(), refs).get("EN_W2", 0, {"role": TTS, "codes": [[0] * 8]})
    assert route == "source file" and got_rate == rate
    np.testing.assert_allclose(samples, tones["EN_W2"], atol=1e-3)
