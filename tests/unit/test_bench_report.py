"""The bench report: a saved bench.json reads back into the same report, and its tables and plot redraw."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlm_tools.bench.report import format_table, from_json, to_json, write_plot

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


# vlm-bench-ttft has streamed levels: the plot draws their time to first token too.
@pytest.mark.parametrize("saved", ["vlm-bench", "vlm-bench-ttft"])
def test_a_saved_report_round_trips_and_redraws(tmp_path, saved):
    data = json.loads((BENCHMARKS / saved / "bench.json").read_text())
    report = from_json(data)
    again = json.loads(json.dumps(to_json(report), default=str))
    assert {k: v for k, v in again.items() if k != "systems"} == {k: v for k, v in data.items() if k != "systems"}
    for saved, loaded in zip(data["systems"], again["systems"], strict=True):
        assert loaded.items() >= saved.items()           # fields added since (None there) aside
    table = format_table(report)
    for system in report.systems:                    # every system has its row, aligned under the header
        row = next(line for line in table.splitlines() if line.startswith(system.label))
        assert f"{system.summary.requests_per_s:.3f}" in row
        assert len(row) == len(table.splitlines()[0])
    write_plot(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
