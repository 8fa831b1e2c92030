"""Reading the server's Prometheus endpoint: the text format, histogram quantiles, and the numbers `vlm top`
shows for an interval between two scrapes (what the Grafana dashboard shows, for people without Grafana)."""
from __future__ import annotations

import math
import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

Samples = dict[tuple[str, frozenset], float]
_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> Samples:
    """{(metric name, frozenset of (label, value)): value} for every sample line of the text format."""
    samples: Samples = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and not line.startswith("#"):
            samples[match.group(1), frozenset(_LABEL.findall(match.group(2) or ""))] = float(match.group(3))
    return samples


def scrape(url: str, *, timeout_s: float = 5.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse_prometheus(response.read().decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for (n, labels), value in samples.items():
        if n == name:
            sums[dict(labels).get(label, "")] += value
    return dict(sums)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """PromQL's histogram_quantile: `buckets` maps each upper bound `le` (inf included) to its cumulative
    count; linear inside the bucket holding the q-th observation; NaN without observations."""
    bounds = sorted(buckets)
    count = buckets[bounds[-1]] if bounds else 0.0
    if count <= 0:
        return math.nan
    rank, lower, below = q * count, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lower                       # beyond the last finite bound: its value, as PromQL does
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-12)
        lower, below = bound, buckets[bound]
    return lower


def bucket_deltas(before: Samples, after: Samples, name: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram `name` (all label sets summed) observed between two scrapes."""
    deltas: dict[float, float] = defaultdict(float)
    for (n, labels), value in after.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"].replace("+Inf", "inf"))
            deltas[le] += value - before.get((n, labels), 0.0)
    return dict(deltas)


@dataclass(frozen=True)
class Interval:
    """What happened between two scrapes `seconds` apart."""
    seconds: float
    requests_per_s: float
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    tpot_p50_s: float
    waiting: float
    live_rows: float
    routing_mix: dict[str, float] = field(default_factory=dict)      # routing source -> share of requests
    refused_per_s: dict[str, float] = field(default_factory=dict)    # reason -> refusals a second
    failed_per_s: float = 0.0                                        # Triton's failed inferences, all models

    @classmethod
    def between(cls, before: Samples, after: Samples, seconds: float) -> Interval:
        def rate(name: str) -> float:
            return (total(after, name) - total(before, name)) / seconds

        requests = total(after, "vlm_requests_total") - total(before, "vlm_requests_total")
        routed = {k: v - by_label(before, "vlm_requests_total", "routing").get(k, 0.0)
                  for k, v in by_label(after, "vlm_requests_total", "routing").items()}
        ttft = bucket_deltas(before, after, "vlm_time_to_first_token_seconds")
        refused = {k: (v - by_label(before, "vlm_refused_requests_total", "reason").get(k, 0.0)) / seconds
                   for k, v in by_label(after, "vlm_refused_requests_total", "reason").items()}
        return cls(seconds, requests / seconds, rate("vlm_generated_tokens_total"),
                   histogram_quantile(0.5, ttft), histogram_quantile(0.95, ttft),
                   histogram_quantile(0.5, bucket_deltas(before, after, "vlm_time_per_output_token_seconds")),
                   total(after, "vlm_waiting_requests"), total(after, "vlm_live_decode_rows"),
                   {k: v / requests for k, v in routed.items() if v} if requests else {},
                   refused, rate("nv_inference_request_failure"))
