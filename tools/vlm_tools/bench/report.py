"""Turn measurements into the report: per-system summaries, ratios to the baselines, fractions of the bound;
then a text table (for the CLI), JSON and a PNG plot."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlm_tools.bench.roofline import WorkloadBound
from vlm_tools.bench.stats import Summary

NOTEBOOK, GENERATE = "notebook", "transformers_generate"


@dataclass
class SystemResult:
    name: str                 # "notebook", "transformers_generate", "served_c8", ...
    label: str
    concurrency: int
    measured_requests: int
    summary: Summary          # of the workload (extrapolated when `extrapolated`)
    extrapolated: bool = False
    note: str = ""
    early_stops: int = 0      # requests that ended before their token limit (should be 0)
    cpu_s_per_request: float | None = None   # CPU time it used (served: all server processes) per request
    cores_used: float | None = None          # CPU seconds per wall second: below its threads = other load won
    bound_batch: int = 1      # the roofline this system is compared with
    fraction_of_bound: float | None = None
    fraction_of_best_bound: float | None = None
    speedup_vs_notebook: float | None = None
    speedup_vs_generate: float | None = None
    ttft_p50_s: float | None = None           # time to first token (first streamed text), streamed systems only
    ttft_p95_s: float | None = None
    full_load_share: float | None = None      # served: of the wall time, every client had a request in flight


@dataclass
class BenchReport:
    date: str
    command: str
    machine: dict
    workload: dict
    bounds: dict[int, WorkloadBound]                 # decode batch -> bound
    bound_steps: dict                                # min decode step, image encode, prefill (seconds)
    decode_steps: list[dict]                         # measured served-decoder steps vs the bound
    systems: list[SystemResult] = field(default_factory=list)
    server_profile: dict = field(default_factory=dict)   # "ensemble, c=8" -> model -> ModelLoad as dict
    notes: list[str] = field(default_factory=list)


def compare(report: BenchReport) -> None:
    """Fill each system's ratios: throughput (tokens/s of the same workload) over the baselines' and bound's."""
    by_name = {s.name: s for s in report.systems}
    best = report.bounds[max(report.bounds)]
    for system in report.systems:
        rate = system.summary.tokens_per_s
        bound = report.bounds.get(system.bound_batch)
        system.fraction_of_bound = rate / bound.tokens_per_s if bound else None
        system.fraction_of_best_bound = rate / best.tokens_per_s
        for base, attr in ((NOTEBOOK, "speedup_vs_notebook"), (GENERATE, "speedup_vs_generate")):
            if base in by_name:
                setattr(system, attr, rate / by_name[base].summary.tokens_per_s)


def _ratio(value: float | None, unit: str = "x") -> str:
    return "-" if value is None else (f"{value:.1%}" if unit == "%" else f"{value:.2f}x")


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_table(report: BenchReport) -> str:
    labels = [s.label + (" *" if s.extrapolated else "") for s in report.systems]
    w = max([34, *(len(label) + 2 for label in labels)])
    head = (f"{'system':<{w}}{'req/s':>8}{'tok/s':>8}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'ttft s':>8}"
            f"{'vs nb':>9}{'vs gen':>8}{'of bound':>10}{'cpu s/req':>10}{'cores':>7}")
    lines = [head, "-" * len(head)]
    for s, label in zip(report.systems, labels):
        m = s.summary
        lines.append(f"{label:<{w}}{m.requests_per_s:>8.3f}{m.tokens_per_s:>8.1f}{m.latency_p50_s:>8.2f}"
                     f"{m.latency_p95_s:>8.2f}{m.latency_p99_s:>8.2f}{_number(s.ttft_p50_s, 8, 2)}"
                     f"{_ratio(s.speedup_vs_notebook):>9}"
                     f"{_ratio(s.speedup_vs_generate):>8}{_ratio(s.fraction_of_bound, '%'):>10}"
                     f"{_number(s.cpu_s_per_request, 10, 2)}{_number(s.cores_used, 7, 2)}")
    for s in report.systems:
        if s.note:
            lines.append(f"  {'*' if s.extrapolated else '-'} {s.label}: {s.note}")
    return "\n".join(lines)


def _kernel(report: BenchReport, key: str) -> str:
    """The probe kernel that set a rate (reports saved before the multi-kernel probe name none)."""
    return f" ({report.machine[key]})" if key in report.machine else ""


def format_bounds(report: BenchReport) -> str:
    rates, steps = report.machine["rates"], report.bound_steps
    lines = [f"machine: {report.machine['cpu']}, {report.machine['cores']} cores; weights read at "
             f"{rates['bandwidth_gb_s']:.1f} GB/s{_kernel(report, 'bandwidth_kernel')}, fp32 GEMM "
             f"{rates['matmul_gflop_s']:.0f} GFLOP/s{_kernel(report, 'matmul_kernel')}",
             f"bound: decode step >= {steps['decode_step_batch1_s'] * 1e3:.1f} ms at batch 1 "
             f"({steps['lm_weight_mb']:.0f} MB of weights), image encoding >= {steps['image_encode_s'] * 1e3:.0f} ms, "
             f"prefill of {steps['prefill_positions']} positions >= {steps['prefill_s'] * 1e3:.0f} ms"]
    for batch, bound in sorted(report.bounds.items()):
        lines.append(f"roofline at decode batch {batch:>2}: {bound.requests_per_s:.3f} req/s, "
                     f"{bound.tokens_per_s:.1f} tok/s (image {bound.image_s / bound.seconds:.0%}, prefill "
                     f"{bound.prefill_s / bound.seconds:.0%}, decode {bound.decode_s / bound.seconds:.0%} of the time)")
    for step in report.decode_steps:
        lines.append(f"served decoder, in-process: batch {step['batch']:>2} step {step['step_s'] * 1e3:.1f} ms "
                     f"(bound {step['bound_s'] * 1e3:.1f} ms, {step['bound_s'] / step['step_s']:.0%} of it); "
                     f"prefill {step['prefill_s'] * 1e3:.0f} ms")
        if "json_constraint_step_s" in step:      # runs saved before the OD grammar existed lack it
            added, closing = step["json_constraint_step_s"], step["json_constraint_closing_step_s"]
            lines.append(f"  OD JSON grammar on all {step['batch']} rows: +{added * 1e3:.2f} ms a step "
                         f"({added / step['step_s']:.1%}), +{closing * 1e3:.2f} ms in the last tokens before "
                         f"the limit ({closing / step['step_s']:.1%})")
    return "\n".join(lines)


def format_profile(report: BenchReport) -> str:
    lines = []
    for served, models in report.server_profile.items():
        lines.append(f"server, {served}:")
        for name, m in models.items():
            if not m["requests"]:
                if m.get("cpu_s"):
                    lines.append(f"  {name:<17} cpu {m['cpu_s']:.1f} s (gRPC, scheduling, ensemble glue)")
                continue
            ms = m["ms_per_request"]
            cpu = f"{m['cpu_s']:7.1f}" if m.get("cpu_s") is not None else "      -"
            lines.append(f"  {name:<17} {m['requests']:>4} req {m['executions']:>4} exec  mean batch "
                         f"{m['mean_batch']:4.1f}  queue {ms['queue']:8.0f} ms  infer/exec "
                         f"{m['ms_per_execution']:8.0f} ms  cpu {cpu} s  batches {m['batch_sizes']}")
    return "\n".join(lines)


def to_json(report: BenchReport) -> dict:
    data = asdict(report)
    data["bounds"] = {str(k): asdict(v) for k, v in report.bounds.items()}
    return data


def from_json(data: dict) -> BenchReport:
    """A report written by `write_json`, back as objects: its tables and plot can be redrawn."""
    systems = [SystemResult(**{**system, "summary": Summary(**system["summary"])}) for system in data["systems"]]
    bounds = {int(batch): WorkloadBound(**bound) for batch, bound in data["bounds"].items()}
    return BenchReport(**{**data, "systems": systems, "bounds": bounds})


def write_json(report: BenchReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(report), indent=2, default=str))


def write_plot(report: BenchReport, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")                       # no display needed
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), width_ratios=(1.2, 1))
    names = [s.label + (" *" if s.extrapolated else "") for s in report.systems]
    rates = [s.summary.tokens_per_s for s in report.systems]
    left.barh(names, rates, color=["tab:gray" if not s.name.startswith("served") else "tab:blue"
                                   for s in report.systems])
    for y, (rate, system) in enumerate(zip(rates, report.systems)):
        ratio = f"  {system.speedup_vs_notebook:.1f}x notebook" if system.speedup_vs_notebook else ""
        left.annotate(f"{rate:.1f}{ratio}", (rate, y), fontsize=7, va="center")
    for batch in sorted({min(report.bounds), max(report.bounds)}):       # the single-stream and best bounds
        bound = report.bounds[batch]
        left.axvline(bound.tokens_per_s, linestyle="--", linewidth=1, color="tab:red")
        left.annotate(f"roofline,\ndecode batch {batch}", (bound.tokens_per_s, len(names) - 0.5), fontsize=7,
                      color="tab:red", ha="right", va="top")
    left.set_xscale("log")
    left.set_xlabel("generated tokens/s (mixed workload)")
    left.tick_params(axis="y", labelsize=7)
    left.invert_yaxis()                         # in the table's order, top to bottom
    left.set_title("throughput (* = extrapolated)")
    served = [s for s in report.systems if s.name.startswith("served")]
    if served:
        modes = {s.name.rsplit("_c", 1)[0]: None for s in served}          # served, served_static, ...
        for mode, colour in zip(modes, ("tab:blue", "tab:orange", "tab:green")):
            runs = [s for s in served if s.name.rsplit("_c", 1)[0] == mode]
            xs = [s.concurrency for s in runs]
            for attr, style in (("latency_p50_s", "o-"), ("latency_p95_s", "s--"), ("latency_p99_s", "^:")):
                suffix = "" if mode == "served" else f" ({mode.removeprefix('served_')})"
                right.plot(xs, [getattr(s.summary, attr) for s in runs], style, color=colour,
                           label=attr[8:11] + suffix)
            if all(s.ttft_p50_s is not None for s in runs):       # streamed clients: when the answer starts
                right.plot(xs, [s.ttft_p50_s for s in runs], "D-", color=colour, linewidth=2.5,
                           label="time to first token, p50" + suffix)
        xs = sorted({s.concurrency for s in served})
        right.set_xscale("log", base=2)
        right.set_xticks(xs, [str(x) for x in xs])
        right.set_xlabel("concurrent clients")
        right.set_ylabel("latency (s)")
        right.set_title("served ensemble over gRPC")
        right.legend()
    fig.suptitle(f"mini-VLM benchmark, {report.machine['cpu']}, {report.date}", fontsize=9)
    fig.tight_layout()
    save_plot(fig, path, dpi=110)
    plt.close(fig)


def save_plot(fig, path: Path, *, dpi: int) -> None:
    """The figure as a 256-colour PNG: a line plot loses nothing visible and takes a third of the bytes
    (147 -> 50 KB), which matters for plots committed beside their numbers."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    palette.save(path, optimize=True)
