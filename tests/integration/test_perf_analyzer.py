"""perf_analyzer smoke run: a few seconds of gRPC load on `vlm`, `route` and (streaming) `vlm_stream` with real
images and queries.

Needs scripts/install_system_deps.sh (Debian's libb64-0d); without it this fails with that instruction.
"""
from __future__ import annotations

import csv
import subprocess

import pytest

from minivlm.server.discovery import TritonNotInstalledError
from minivlm.server.perf_analyzer import perf_analyzer_command, perf_analyzer_env
from vlm_tools.bench.perf_inputs import write_perf_inputs

REQUESTS = 8


@pytest.fixture(scope="module")
def analyzer_env(server):
    try:
        return perf_analyzer_env(admin_key=server.admin_key)
    except TritonNotInstalledError as error:
        pytest.fail(f"perf_analyzer cannot run: {error}", pytrace=False)


def run_perf_analyzer(server, model: str, input_data, report_csv, env, *extra: str) -> subprocess.CompletedProcess:
    # --request-count: a fixed number of requests and no stability search, so the run stays short
    command = perf_analyzer_command(server, model, "--input-data", str(input_data), "--concurrency-range", "2",
                                    "--request-count", str(REQUESTS), "-f", str(report_csv), *extra)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("model, extra", [("vlm", ()), ("route", ()), ("vlm_stream", ("--streaming",))])
def test_perf_analyzer_measures_throughput_without_errors(server, analyzer_env, model, extra, tmp_path):
    inputs = write_perf_inputs(tmp_path / "inputs.json", model=model, count=6,
                               mix={"caption": 1, "od": 1, "vqa": 2})
    report = tmp_path / "report.csv"
    result = run_perf_analyzer(server, model, inputs, report, analyzer_env, *extra)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 1, report.read_text()
    assert float(rows[0]["Inferences/Second"]) > 0, report.read_text()
