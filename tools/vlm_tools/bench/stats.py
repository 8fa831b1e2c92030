"""Latency percentiles and throughput summaries, shared by every benchmarked system."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Summary:
    requests: int
    tokens: int               # generated tokens
    wall_s: float             # first request sent -> last answer received
    requests_per_s: float
    tokens_per_s: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float


def percentiles(values: Sequence[float], points: Sequence[float] = PERCENTILES) -> list[float]:
    """Linear interpolation between closest ranks (numpy's default), so p50 of [1, 2] is 1.5."""
    if len(values) == 0:
        raise ValueError("percentiles of an empty sample")
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), points)]


def summarize(latencies_s: Sequence[float], tokens: int, wall_s: float) -> Summary:
    if wall_s <= 0:
        raise ValueError(f"wall_s must be > 0, got {wall_s}")
    p50, p95, p99 = percentiles(latencies_s)
    return Summary(requests=len(latencies_s), tokens=int(tokens), wall_s=float(wall_s),
                   requests_per_s=len(latencies_s) / wall_s, tokens_per_s=tokens / wall_s,
                   latency_mean_s=float(np.mean(latencies_s)), latency_p50_s=p50, latency_p95_s=p95,
                   latency_p99_s=p99)

