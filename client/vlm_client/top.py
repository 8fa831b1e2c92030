"""`vlm top`: the server's numbers in the terminal, refreshed every interval (rich), from its /metrics."""
from __future__ import annotations

import math
import time

from .metrics import Interval, scrape

DEFAULT_METRICS_URL = "http://localhost:8002/metrics"


def measure(url: str, interval_s: float) -> Interval:
    before, start = scrape(url), time.monotonic()
    time.sleep(interval_s)
    after = scrape(url)
    return Interval.between(before, after, time.monotonic() - start)


def render(interval: Interval, url: str):
    from rich.table import Table

    def seconds(value: float) -> str:
        return "-" if math.isnan(value) else f"{value * 1e3:.0f} ms"

    table = Table(title=f"{url}   (last {interval.seconds:.1f} s)", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [("requests/s", f"{interval.requests_per_s:.2f}"), ("tokens/s", f"{interval.tokens_per_s:.1f}"),
            ("time to first token p50 / p95", f"{seconds(interval.ttft_p50_s)} / {seconds(interval.ttft_p95_s)}"),
            ("time per output token p50", seconds(interval.tpot_p50_s)),
            ("waiting requests / live decode rows", f"{interval.waiting:.0f} / {interval.live_rows:.0f}"),
            ("routing", ", ".join(f"{k} {v:.0%}" for k, v in sorted(interval.routing_mix.items())) or "-"),
            ("refused/s", ", ".join(f"{k} {v:.2f}" for k, v in sorted(interval.refused_per_s.items()) if v) or "0"),
            ("failed inferences/s", f"{interval.failed_per_s:.2f}")]
    for name, value in rows:
        table.add_row(name, value)
    return table


def run_top(url: str, *, interval_s: float, once: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if once:
        console.print(render(measure(url, interval_s), url))
        return
    with Live(render(measure(url, interval_s), url), console=console, auto_refresh=False) as live:
        try:
            while True:
                live.update(render(measure(url, interval_s), url), refresh=True)
        except KeyboardInterrupt:
            pass
