"""One full benchmark: bounds, the in-process systems, the served ensemble at each concurrency, the report."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from minivlm.model.checkpoint import load_vlm
from minivlm.model.vlm import MiniVLM
from vlm_tools.bench import inprocess, roofline, served
from vlm_tools.bench.machine import MachineReport, best_of, measure_machine
from vlm_tools.bench.report import GENERATE, NOTEBOOK, BenchReport, SystemResult, compare
from vlm_tools.bench.stats import percentiles, summarize
from vlm_tools.bench.workload import DEFAULT_MIX, WorkItem, build_workload, task_cycle, whole_cycles

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    cache_dir: Path
    log_dir: Path
    mix: dict[str, int] = None                       # default DEFAULT_MIX
    requests: int = 12                               # per served concurrency level (whole mix rounds, >= c)
    concurrency: Sequence[int] = (1, 4, 8, 16)
    generate_requests: int | None = None             # default: one round of the mix
    notebook_requests: int = 1                       # measured end to end; the rest is extrapolated
    notebook_probe_lengths: int = 4                  # extra sequence lengths timed for the fit
    skip_notebook: bool = False
    skip_generate: bool = False
    skip_served: bool = False
    served_batching: Sequence[str] = ("continuous",)   # generator_engine modes to serve, one server each
    decode_batches: Sequence[int] = (1, 8)
    server_threads: int | None = 1                   # per heavy model; None = the repository's settings
    threads: int = 1                                 # torch threads of this process (recorded only)
    seed: int = 0
    progress: bool = True
    command: str = ""
    device: str = "cpu"                              # "cuda": in-process systems and the served models on a GPU
    max_live_rows: int | None = None                 # generator_engine's; None = the repository's (16)
    router: str = "minilm"                           # served.prepare_repository's

    @property
    def task_mix(self) -> dict[str, int]:
        return self.mix or DEFAULT_MIX


def run_bench(options: BenchOptions) -> BenchReport:
    vlm = load_vlm(served.prepare_notebook(options.cache_dir, seed=options.seed))
    vlm.vision.to(options.device)
    vlm.language_model.to(options.device)
    workload = build_workload(whole_cycles(options.requests, options.task_mix), options.task_mix, seed=options.seed)
    costs = roofline.model_costs(vlm.vision.vit.config, vlm.language_model.config)
    machine_before = measure_machine(costs.lm_weight_bytes)
    report = BenchReport(date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                         command=options.command, machine={}, workload=_workload_info(workload, options, costs),
                         bounds={}, bound_steps={}, decode_steps=_decode_steps(vlm, workload, options))
    if not options.skip_notebook:
        report.systems.append(_notebook(vlm, workload, options))
    if not options.skip_generate:
        report.systems.append(_generate(vlm, workload, options))
    if not options.skip_served:
        repository = served.prepare_repository(options.cache_dir, seed=options.seed, device=options.device,
                                               router=options.router)
        _served(repository, report, options)
    _apply_bounds(report, vlm, workload, costs, best_of(machine_before, measure_machine(costs.lm_weight_bytes)),
                  options)
    compare(report)
    return report


# --- bounds -----------------------------------------------------------------------------------------------
def _prompt_ids(vlm: MiniVLM, item: WorkItem) -> list[int]:
    question = item.query.split("]", 1)[1].strip() if item.task == "vqa" else ""
    return vlm.prompt_ids(item.task, question)


def _workload_info(workload: list[WorkItem], options: BenchOptions, costs: roofline.ModelCosts) -> dict:
    return {"device": options.device, "mix": options.task_mix, "round": task_cycle(options.task_mix),
            "requests": len(workload),
            "tokens_per_request": {i.task: i.max_new_tokens for i in workload},
            "image_positions": costs.image_positions, "torch_threads": options.threads,
            "server_threads": options.server_threads}


def _apply_bounds(report: BenchReport, vlm: MiniVLM, workload: list[WorkItem], costs: roofline.ModelCosts,
                  machine: MachineReport, options: BenchOptions) -> None:
    """The roofline from the best rates measured before and after the run."""
    rates = machine.rates
    one_round = [roofline.RequestShape(len(_prompt_ids(vlm, i)), i.max_new_tokens)
                 for i in workload[:len(task_cycle(options.task_mix))]]
    batches = sorted({1, *(min(c, 16) for c in options.concurrency)})
    positions = costs.image_positions + max(r.prompt_tokens for r in one_round)
    report.machine = {**asdict(machine), **machine.summary(), "rates": asdict(rates)}
    report.bounds = {b: roofline.workload_bound(costs, rates, one_round, batch=b) for b in batches}
    report.bound_steps = {"decode_step_batch1_s": roofline.decode_step_s(costs, rates, context=positions),
                          "lm_weight_mb": costs.lm_weight_bytes / 1e6,
                          "image_encode_s": roofline.image_encode_s(costs, rates), "prefill_positions": positions,
                          "prefill_s": roofline.prefill_s(costs, rates, positions),
                          "vit_gflop": costs.vit_flops / 1e9, "costs": asdict(costs)}
    for step in report.decode_steps:
        step["bound_s"] = roofline.decode_step_s(costs, rates, batch=step["batch"],
                                                 context=step["prefix_positions"] + 16)


def _decode_steps(vlm: MiniVLM, workload: list[WorkItem], options: BenchOptions) -> list[dict]:
    """The served generator's `decode` in-process at each batch (the bound is added at the end)."""
    positions = max(vlm.vision.num_positions + len(_prompt_ids(vlm, i)) for i in workload)
    # the decoder format the (first) served mode runs: the served engine's steps, measured in-process
    precision = served.parse_mode(options.served_batching[0]).precision
    steps = []
    for batch in options.decode_batches:
        step = inprocess.measure_decode_step(vlm.language_model, batch=batch, prefix_positions=positions,
                                             eos_token_id=vlm.eos_token_id, precision=precision)
        constraint = inprocess.measure_json_constraint(vlm.detection_grammar, vlm.tokenizer, batch=batch)
        log.info("decode step at batch %d: %.1f ms; OD grammar adds %.2f ms (%.2f ms near the limit)", batch,
                 step.step_s * 1e3, constraint["step_s"] * 1e3, constraint["closing_step_s"] * 1e3)
        steps.append(asdict(step) | {"json_constraint_" + k: v for k, v in constraint.items()})
    return steps


# --- systems ----------------------------------------------------------------------------------------------
def _notebook_sample(workload: list[WorkItem], count: int) -> list[WorkItem]:
    """The cheapest requests, one per task first: enough to check the extrapolation end to end."""
    firsts = list({i.task: i for i in reversed(workload)}.values())
    return sorted(firsts, key=lambda i: i.max_new_tokens)[:count]


def _notebook(vlm: MiniVLM, workload: list[WorkItem], options: BenchOptions) -> SystemResult:
    sample = _notebook_sample(workload, options.notebook_requests)
    run = inprocess.run_notebook(vlm, sample, progress=options.progress)
    _probe_lengths(vlm, workload, run, options.notebook_probe_lengths)
    shapes = [(vlm.vision.num_positions + len(_prompt_ids(vlm, i)), i.max_new_tokens) for i in workload]
    latencies = inprocess.notebook_latencies(run, shapes)
    predicted = inprocess.notebook_latencies(run, [(r.prefix_positions, r.tokens) for r in run.requests])
    measured = ", ".join(f"{r.task} {r.tokens} tokens {r.latency_s:.1f} s (fit {p:.1f} s)"
                         for r, p in zip(run.requests, predicted))
    intercept, slope = inprocess.step_time_fit(run.steps)
    note = (f"extrapolated: measured {measured}; per-token time {intercept:.3f} s + {slope * 1e3:.2f} ms per "
            f"position (fit to {len(run.steps)} timed steps) x the workload's tokens, + mean vision time")
    share = sum(r.cpu_s for r in run.requests) / sum(r.latency_s for r in run.requests)
    return SystemResult(NOTEBOOK, "(a) notebook pipeline", 1, len(sample),
                        summarize(latencies, sum(s[1] for s in shapes), sum(latencies)), extrapolated=True,
                        note=note, cores_used=share, cpu_s_per_request=share * sum(latencies) / len(latencies))


def _probe_lengths(vlm: MiniVLM, workload: list[WorkItem], run: inprocess.NotebookRun, count: int) -> None:
    """Time single cache-free steps at sequence lengths up to the workload's longest, so the fit spans it."""
    if count <= 0:
        return
    shortest = vlm.vision.num_positions + 1
    longest = max(vlm.vision.num_positions + len(_prompt_ids(vlm, i)) + i.max_new_tokens for i in workload)
    hidden = vlm.language_model.config.hidden_size
    for length in torch.linspace(shortest, longest, count).round().int().tolist():
        prefix = torch.randn(length, hidden) * 0.02
        inprocess.notebook_loop(vlm.language_model, prefix, 1, vlm.eos_token_id, run.steps)


def _generate(vlm: MiniVLM, workload: list[WorkItem], options: BenchOptions) -> SystemResult:
    count = whole_cycles(options.generate_requests or 1, options.task_mix)
    items = build_workload(count, options.task_mix, seed=options.seed)
    timings = inprocess.run_generate(vlm, items, progress=options.progress)
    summary = summarize([t.latency_s for t in timings], sum(t.tokens for t in timings),
                        sum(t.latency_s for t in timings))
    cpu = sum(t.cpu_s for t in timings)
    return SystemResult(GENERATE, "(b) transformers generate", 1, len(items), summary,
                        early_stops=sum(t.tokens < i.max_new_tokens for t, i in zip(timings, items)),
                        cpu_s_per_request=cpu / len(items), cores_used=cpu / summary.wall_s)


def _served(repository: Path, report: BenchReport, options: BenchOptions) -> None:
    if options.server_threads is not None:
        served.set_model_threads(repository, options.server_threads)
    if options.max_live_rows is not None:
        served.set_live_rows(repository, options.max_live_rows)
    for mode in options.served_batching:
        served.set_mode(repository, mode)
        with served.running_server(repository, options.log_dir) as server:
            served.warm_up(server, build_workload(3, options.task_mix))
            for concurrency in options.concurrency:
                count = whole_cycles(max(options.requests, concurrency), options.task_mix)
                items = build_workload(count, options.task_mix, seed=options.seed)
                level = served.run_level(server, items, concurrency, progress=options.progress,
                                         stream=served.parse_mode(mode).stream)
                result = _served_result(level, items, mode)
                report.systems.append(result)
                report.server_profile[result.label.removeprefix("(c) served ")] = {
                    name: asdict(m) for name, m in level.models.items()}
    served.set_mode(repository, served.BATCHING_MODES[0])


def _served_name(mode: str, concurrency: int) -> str:
    if mode == "continuous":
        return f"served_c{concurrency}"
    return f"served_{mode.replace(':', '_').replace('+', '_')}_c{concurrency}"


def _served_result(level: served.LoadLevel, items: list[WorkItem], mode: str = "continuous") -> SystemResult:
    limits = {i.index: i.max_new_tokens for i in items}
    summary = summarize([t.latency_s for t in level.timings], sum(t.tokens for t in level.timings), level.wall_s)
    early = sum(t.tokens < limits[t.index] for t in level.timings)
    c = level.concurrency
    cpu = sum(m.cpu_s or 0.0 for m in level.models.values())
    batching, precision, stream = served.parse_mode(mode)
    variant = [f"{batching} batching"] * (batching != "continuous") + [f"{precision} decoder"] * (precision != "fp32") \
        + ["streamed"] * stream
    ttft = [t.ttft_s for t in level.timings if t.ttft_s is not None]
    ttft_p50, ttft_p95 = percentiles(ttft, (50, 95)) if ttft else (None, None)
    label = f"(c) served {', '.join(variant) or 'ensemble'}, c={c}"
    name = _served_name(mode, c)
    full_load = level.full_load_s / level.wall_s
    note = (f"all {c} clients had a request in flight {full_load:.0%} of the wall time, the rest drained"
            if c > 1 else "")
    return SystemResult(name, label, c, len(items), summary, note=note,
                        early_stops=early, bound_batch=min(c, 16), cpu_s_per_request=cpu / len(items),
                        cores_used=cpu / level.wall_s, ttft_p50_s=ttft_p50, ttft_p95_s=ttft_p95,
                        full_load_share=full_load)
