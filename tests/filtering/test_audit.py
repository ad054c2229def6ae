"""The audit report on filter and tokenize folders (local and s3://), checked in headless Chromium."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from filtering.audit import audit
from tests.filtering.conftest import JOB_ENV, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def filter_report(filter_out, tmp_path_factory):
    out, _ = filter_out
    report = tmp_path_factory.mktemp("report")
    return audit(str(out), str(report)), report


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
    assert set(a["wer"]["by_speaker"]) == {"asst_f", "asst_m"} and a["wer"]["all"]["n"] == 16
    assert {"p50", "p90", "p99"} <= set(a["duration"]["all"]) and a["speaking_rate"]["all"]["n"] == 16
    assert len(a["codes"]["per_codebook"]) == 8 and all(c["used"] + c["dead"] == a["codes"]["codebook_size"] for c in a["codes"]["per_codebook"])
    assert a["frames"]["n_checked"] == 11 and a["frames"]["n_inconsistent"] == 0  # assistant turns of kept dialogues
    assert set(a["plots"]) == {"wer_hist", "wer_by_speaker", "duration_hist", "speaking_rate_hist", "frames_vs_duration", "code_usage"}
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


def test_report_renders_in_headless_chromium(filter_report, tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    a, report = filter_report
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get((report / "index.html").as_uri())
        assert driver.title.startswith("Data audit")
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == len(a["plots"])
        for img in images:  # every plot decoded and laid out
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img), img.get_attribute("alt")
            assert img.size["width"] > 100
        cells = driver.find_elements(By.CSS_SELECTOR, "[data-key]")
        assert len(cells) > 50
        for cell in cells:  # every number on the page is the one in audit.json
            key = cell.get_attribute("data-key")
            assert cell.text.strip() == _fmt(_lookup(a, key)), key
        stages = driver.find_element(By.ID, "stages").text
        assert "adds up" in stages and "MISMATCH" not in stages
        assert driver.find_elements(By.CSS_SELECTOR, "#examples .del, #examples .sub, #examples .ins")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] if hasattr(driver, "get_log") else []
        assert not errors, errors
    finally:
        driver.quit()
