"""tools/mtp_bench.py against the running servers (as the community script is used against llama-server)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
from contextlib import redirect_stdout

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def mtp_bench():
    spec = importlib.util.spec_from_file_location("mtp_bench", os.path.join(ROOT, "tools", "mtp_bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(mtp_bench, *argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert mtp_bench.main(list(argv)) == 0
    return out.getvalue()


def test_bench_reads_the_draft_fields(mtp_bench, mtp_server, tmp_path):
    out_file = tmp_path / "mtp.json"
    text = run(
        mtp_bench, "--url", mtp_server.url, "--prompts", "2", "--max-tokens", "8", "--out", str(out_file)
    )
    report = json.loads(out_file.read_text())
    assert [r["name"] for r in report["results"]] == ["code_python", "code_cpp"]
    for r in report["results"]:
        assert r["predicted_n"] == 8 and r["predicted_per_second"] > 0
        assert r["draft_n"] > 0 and r["accept_rate"] == round(r["draft_n_accepted"] / r["draft_n"], 4)
    agg = report["aggregate"]
    assert agg["n_requests"] == 2 and agg["total_predicted"] == 16
    assert agg["total_draft"] == sum(r["draft_n"] for r in report["results"]) > 0
    assert "  code_python        pred=   8 draft=" in text and "Aggregate:" in text


def test_bench_compare_and_diff(mtp_bench, mtp_server, plain_server, tmp_path):
    out_file = tmp_path / "both.json"
    text = run(
        mtp_bench,
        "--url",
        plain_server.url,
        "--compare",
        mtp_server.url,
        "--prompts",
        "1",
        "--max-tokens",
        "6",
        "--out",
        str(out_file),
    )
    assert "draft=   0 acc=   0 rate=n/a" in text  # no MTP: the fields are absent, read as 0
    assert "Comparison" in text and "x " in text.split("Comparison")[1]
    runs = json.loads(out_file.read_text())["runs"]
    assert runs[0]["results"][0]["draft_n"] == 0 and runs[1]["results"][0]["draft_n"] > 0
    for i, run_ in enumerate(runs):
        (tmp_path / f"{i}.json").write_text(json.dumps(run_))
    diff = run(mtp_bench, "--diff", str(tmp_path / "0.json"), str(tmp_path / "1.json"))
    assert "code_python" in diff and "mean" in diff
