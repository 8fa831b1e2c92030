"""`vlm bench` and `vlm perf-inputs`; the main `vlm` CLI registers them through `add_bench_subcommands`."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from vlm_client import protocol as P
from vlm_tools.bench.workload import parse_mix

DEFAULT_MIX = "caption=1,od=1,vqa=1"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _modes(text: str) -> tuple[str, ...]:
    from vlm_tools.bench.served import parse_mode

    modes = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not modes:
        raise argparse.ArgumentTypeError(f"expected one or more served modes, got {text!r}")
    for mode in modes:
        try:
            parse_mode(mode)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return modes


def _mix(text: str) -> dict[str, int]:
    try:
        return parse_mix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minivlm" / "bench"


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="throughput of the notebook pipeline, transformers generate and the served ensemble",
        description="Full-size architecture (ViT-base + SmolLM-135M shapes, random weights), a mixed workload "
                    "with fixed output lengths (caption 40, OD 150, VQA 10 tokens), compared with each other "
                    "and with the machine's measured memory-bandwidth / matmul bound.")
    parser.add_argument("-o", "--output", type=Path, default=Path("bench-results"), metavar="DIR",
                        help="folder for bench.json and bench.png (default ./bench-results)")
    parser.add_argument("--cache-dir", type=Path, default=_default_cache(),
                        help="where the full-size model repository is built once and reused")
    parser.add_argument("--mix", type=_mix, default=parse_mix(DEFAULT_MIX), help=f"task weights ({DEFAULT_MIX})")
    parser.add_argument("--requests", type=int, default=12, metavar="N",
                        help="requests per served concurrency level, rounded up to whole rounds of the mix "
                             "and to at least the concurrency (default 12)")
    parser.add_argument("--concurrency", type=_ints, default=(1, 4, 8, 16), metavar="C,C,...",
                        help="served concurrency levels (default 1,4,8,16)")
    parser.add_argument("--generate-requests", type=int, default=None, metavar="N",
                        help="requests for transformers generate (default: one round of the mix)")
    parser.add_argument("--notebook-requests", type=int, default=1, metavar="N",
                        help="notebook requests measured end to end, cheapest first (default 1); the workload "
                             "is extrapolated from timed steps, ~0.4 s+ per token")
    parser.add_argument("--skip-notebook", action="store_true", help="leave out the notebook pipeline")
    parser.add_argument("--skip-generate", action="store_true", help="leave out transformers generate")
    parser.add_argument("--skip-served", action="store_true", help="leave out the served ensemble")
    parser.add_argument("--served-batching", type=_modes, default=("continuous",), metavar="MODE,...",
                        help="generator modes to serve, one server each, BATCHING[:PRECISION]: continuous "
                             "(default), continuous_inline (prompts prefilled on the decoding thread), static (the "
                             "batches that run until their longest request ends); PRECISION fp32 (default), bf16 or "
                             "int8 (the decoder's weights; accuracy: vlm_tools.bench.decode_step, vlm demo-eval); "
                             "+stream: clients stream (vlm_stream) and time to first token is measured; e.g. "
                             "continuous,continuous_inline,continuous:int8,continuous+stream")
    parser.add_argument("--decode-batches", type=_ints, default=(1, 8), metavar="B,B,...",
                        help="batch sizes for the in-process decode-step measurement (default 1,8)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in this process (default 1: on a shared 2-core machine a second "
                             "thread stalls at every parallel region while another process holds a core)")
    parser.add_argument("--server-threads", type=int, default=1, metavar="N",
                        help="intra-op threads of the served generator and vision encoder, written into the "
                             "cached repository (default 1, like --threads; 0 keeps the repository's settings)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: transformers generate and the decode steps run on the GPU, and the served "
                             "repository is exported with KIND_GPU instances (docs/gpu.md); the roofline bounds "
                             "stay the host CPU's")
    parser.add_argument("--router", choices=("minilm", "notebook"), default="minilm",
                        help="the served router: the shipped MiniLM (default) or the checkpoint's LSTM (needs no "
                             "pretrained MiniLM package; the bench's queries are tagged, so the choice costs only "
                             "one small ONNX call per request)")
    parser.add_argument("--max-live-rows", type=int, default=None, metavar="N",
                        help="generator_engine's max_live_rows in the cached repository (default: its own, 16)")
    parser.add_argument("--seed", type=int, default=0, help="weights and workload seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of tables")
    parser.add_argument("--from-json", type=Path, metavar="BENCH_JSON",
                        help="measure nothing: print the tables of a saved bench.json and redraw its plot "
                             "(written next to it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    import torch

    from vlm_tools.bench.report import (
        format_bounds,
        format_profile,
        format_table,
        from_json,
        to_json,
        write_json,
        write_plot,
    )
    from vlm_tools.bench.run import BenchOptions, run_bench

    if args.from_json:
        report = from_json(json.loads(args.from_json.read_text()))
        write_plot(report, args.from_json.with_name("bench.png"))
        print(format_bounds(report), format_table(report), format_profile(report), sep="\n\n")
        return 0
    torch.set_num_threads(args.threads)
    report = run_bench(BenchOptions(
        cache_dir=args.cache_dir, log_dir=args.cache_dir / "server-logs", mix=args.mix, requests=args.requests,
        concurrency=args.concurrency, generate_requests=args.generate_requests,
        notebook_requests=args.notebook_requests, skip_notebook=args.skip_notebook,
        skip_generate=args.skip_generate, skip_served=args.skip_served, served_batching=args.served_batching,
        decode_batches=args.decode_batches,
        server_threads=args.server_threads or None, threads=args.threads, device=args.device,
        max_live_rows=args.max_live_rows, router=args.router,
        seed=args.seed, progress=not args.no_progress, command=shlex.join(["vlm", *sys.argv[1:]])))
    write_json(report, args.output / "bench.json")
    plotted = _plot(report, args.output / "bench.png")
    if args.json:
        print(json.dumps(to_json(report), indent=2, default=str))
        return 0
    print(format_bounds(report), format_table(report), format_profile(report), sep="\n\n")
    print(f"\nwrote {args.output / 'bench.json'}" + (f" and {args.output / 'bench.png'}" if plotted else ""))
    return 0


def _plot(report, path: Path) -> bool:
    """The plot, where matplotlib is installed (the GPU machine has none: `--from-json` redraws it elsewhere)."""
    from vlm_tools.bench.report import write_plot

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"no matplotlib here: no plot; redraw it with `vlm bench --from-json {path.with_name('bench.json')}`",
              file=sys.stderr)
        return False
    write_plot(report, path)
    return True


def add_perf_inputs_command(subparsers) -> None:
    from vlm_tools.bench.perf_inputs import MODELS

    parser = subparsers.add_parser(
        "perf-inputs", help="write a perf_analyzer --input-data JSON file with real images and queries",
        description="BYTES elements are base64 with Triton's 4-byte little-endian length prefix, as "
                    "perf_analyzer expects for {\"b64\": ...} data.")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="JSON file to write")
    parser.add_argument("--model", choices=sorted(MODELS), default=P.ENSEMBLE,
                        help="whose inputs to write (default vlm)")
    parser.add_argument("--mix", type=_mix, default=parse_mix(DEFAULT_MIX), help=f"task weights ({DEFAULT_MIX})")
    parser.add_argument("--count", type=int, default=12, metavar="N", help="elements (requests), default 12")
    parser.add_argument("--fixed-length", action="store_true",
                        help="add max_new_tokens (the task's limit) and temperature 0 to every request")
    parser.add_argument("--embeds-shape", type=_ints, default=(197, 576), metavar="POSITIONS,HIDDEN",
                        help="generator only: image_embeds shape (default 197,576 = full size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_perf_inputs_command)


def run_perf_inputs_command(args: argparse.Namespace) -> int:
    from vlm_tools.bench.perf_inputs import write_perf_inputs

    if len(args.embeds_shape) != 2:
        raise SystemExit(f"--embeds-shape needs POSITIONS,HIDDEN, got {args.embeds_shape}")
    path = write_perf_inputs(args.output, model=args.model, count=args.count, mix=args.mix, seed=args.seed,
                             fixed_length=args.fixed_length, embeds_shape=args.embeds_shape)
    print(f"wrote {args.count} {args.model} requests to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_router_bench_command(subparsers) -> None:
    parser = subparsers.add_parser("router-bench", help="per-query latency of an exported router graph")
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_router_bench_command)


def run_router_bench_command(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vlm_tools.bench.router import benchmark_router, format_bench

    result = benchmark_router(args.onnx, args.tokenizer, n_queries=args.queries,
                              intra_op_threads=args.intra_op_threads)
    print(json.dumps(asdict(result), indent=2) if args.json else format_bench(result))
    return 0


def add_chaos_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "chaos", help="kill -9 each python model's process, then tritonserver, under load; time the recovery",
        description="Serve REPO with `vlm serve` (self-healing), keep greedy ask/route load on it, SIGKILL one "
                    "stub of each python model in turn and then the tritonserver process, and print for each: "
                    "seconds until readiness false, until ready again, until answered right again, and the "
                    "requests that failed with their error kinds. Ends with SIGTERM and a leftovers check.")
    parser.add_argument("--model-repository", type=Path, required=True, metavar="REPO")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop clients (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="per ask request (default 16)")
    parser.add_argument("--models", help="comma-separated python models to kill (default: all)")
    parser.add_argument("--no-server-kill", dest="kill_server", action="store_false",
                        help="do not kill the tritonserver process itself")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per recovery and for startup")
    parser.add_argument("--log", type=Path, default=Path("vlm-chaos-serve.log"), help="vlm serve's output")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=run_chaos_command)


def run_chaos_command(args: argparse.Namespace) -> int:
    from vlm_tools.bench.chaos import format_report, report_json, run_chaos

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    report = run_chaos(args.model_repository, clients=args.clients, max_new_tokens=args.max_new_tokens,
                       timeout_s=args.timeout_s, log_path=args.log, models=models, kill_server=args.kill_server)
    print(format_report(report))
    if args.json:
        args.json.write_text(report_json(report))
    healed = all(k.correct_again_s is not None for k in report.kills)
    clean = report.stop_exit_code == 0 and not report.processes_left and not report.shm_regions_left
    return 0 if healed and clean else 1


def add_soak_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "soak", help="steady load with 10%% bad requests for N minutes: nothing lost, memory and /dev/shm flat",
        description="Serve REPO with `vlm serve`, keep CONCURRENCY closed-loop greedy clients on it for MINUTES "
                    "(about 10%% of requests bad on purpose: corrupt image, empty query, out-of-range option), "
                    "check every good answer against the server's first answer and every bad request for "
                    "INVALID_ARGUMENT naming the step, sample tritonserver and stub RSS and /dev/shm, and report "
                    "their growth after the warm-up. Ends with SIGTERM and a leftovers check. Exit 1 on any lost "
                    "good request, unclear error, growth of 5%% or more, or leftover.")
    parser.add_argument("--model-repository", type=Path, required=True, metavar="REPO")
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--bad-fraction", type=float, default=0.1, help="share of bad requests (default 0.1)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="per good request (default 16)")
    parser.add_argument("--warmup-s", type=float, help="growth is measured after this (default 20%% of the run)")
    parser.add_argument("--sample-every-s", type=float, default=5.0, help="memory sampling period (default 5)")
    parser.add_argument("--log", type=Path, default=Path("vlm-soak-serve.log"), help="vlm serve's output")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also plot memory and /dev/shm over time")
    parser.set_defaults(func=run_soak_command)


def run_soak_command(args: argparse.Namespace) -> int:
    from vlm_tools.bench.soak import format_report, plot, report_json, run_soak

    def progress(report) -> None:
        s = report.samples[-1]
        print(f"  {s.t_s:6.0f} s  good {report.good_ok}/{report.good_sent}  bad {report.bad_clear}/{report.bad_sent}"
              f"  RSS server {s.server_rss_mb:.0f} MB stubs {s.stubs_rss_mb:.0f} MB  /dev/shm {s.shm_mb:.0f} MB",
              flush=True)

    report = run_soak(args.model_repository, duration_s=60 * args.minutes, log_path=args.log,
                      concurrency=args.concurrency, bad_fraction=args.bad_fraction,
                      max_new_tokens=args.max_new_tokens, warmup_s=args.warmup_s,
                      sample_every_s=args.sample_every_s, progress=progress)
    print(format_report(report))
    if args.json:
        args.json.write_text(report_json(report))
    if args.plot:
        plot(report, args.plot)
    return 0 if report.passed() else 1


def add_overload_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "overload", help="4x the sustainable request rate: accepted p99, fast refusals, memory",
        description="Serve REPO with tritonserver, measure the rate it answers with CONCURRENCY closed-loop "
                    "greedy caption clients (sustainable), then send open-loop arrivals at that rate and at "
                    "FACTOR times it, and print for each: accepted requests and their latency (p50, p99, max), "
                    "refusals (Overloaded: UNAVAILABLE / 503) and their latency, other errors, unanswered "
                    "requests, and the server's RSS. Exit 1 when the FACTOR phase's accepted p99 exceeds 3x the "
                    "1x phase's, refusals take over 1 s (p99), or any request fails otherwise or hangs.")
    parser.add_argument("--model-repository", type=Path, required=True, metavar="REPO")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="per request (default 24)")
    parser.add_argument("--duration-s", type=float, default=30.0, help="per phase (default 30)")
    parser.add_argument("--factor", type=float, default=4.0, help="overload multiple (default 4)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=run_overload_command)


def run_overload_command(args: argparse.Namespace) -> int:
    from vlm_tools.bench.overload import format_report, passed, report_json, run_overload

    report = run_overload(args.model_repository, concurrency=args.concurrency, max_new_tokens=args.max_new_tokens,
                          duration_s=args.duration_s, factor=args.factor)
    print(format_report(report))
    if args.json:
        args.json.write_text(report_json(report))
    return 0 if passed(report) else 1


def add_bench_subcommands(subparsers) -> None:
    add_bench_command(subparsers)
    add_perf_inputs_command(subparsers)
    add_router_bench_command(subparsers)
    add_chaos_command(subparsers)
    add_soak_command(subparsers)
    add_overload_command(subparsers)


def main(argv: list[str] | None = None) -> int:
    """`python -m vlm_tools.bench COMMAND ...`, the same as `vlm COMMAND ...`."""
    import logging

    parser = argparse.ArgumentParser(prog="python -m vlm_tools.bench")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_bench_subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)
