"""Our decode step against llama.cpp's, side by side in one run: fp32 vs F32 and int8 vs Q8_0, same weights.

    python benchmarks/llama_cpp_compare.py [--threads 2] [--batches 1 8] [--rounds 9] [--steps 8]

DOWNLOADS, once, from PyPI only: the sdist of llama-cpp-python (about 75 MB; its vendor/llama.cpp is what
gets built) and, when no cmake is on PATH, PyPI's cmake. Builds and GGUF files are cached under
~/.cache/minivlm-llama-cpp (or $XDG_CACHE_HOME, or --cache-dir): the first run compiles for minutes, later
runs start at once.

The weights are decode_step.py's: full-size SmolLM-135M shapes, torch.manual_seed(0). They are written to
GGUF as F32 and Q8_0 (vlm_tools.bench.gguf_export) and timed by a small program linked against llama.cpp
(vlm_tools.bench.llama_cpp_build) that keeps each model loaded and prefilled, as our decoder here keeps
its caches. Both sides prefill `--prefix` random positions per row, then each round runs `--steps` decode
steps of one token per row on each side, alternating which goes first, and rewinds to the prefix: other work
on a shared CPU slows both alike. Each side's number is the median step over all rounds; same threads.
The machine probe (vlm_tools.bench.probe) runs before and after, so each step can be set against the bound.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

PAIRS = (("fp32", "F32"), ("int8", "Q8_0"))        # our precision, llama.cpp's type


class LlamaCppStep:
    """One step-timer process: a GGUF loaded and `batch` rows prefilled; `round()` -> the steps' seconds."""

    def __init__(self, timer: Path, gguf: Path, *, threads: int, batch: int, prefix: int, steps: int):
        self.process = subprocess.Popen([str(timer), str(gguf), str(threads), str(batch), str(prefix), str(steps)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"llama.cpp step timer failed on {gguf} (exit {self.process.wait()})")

    def round(self) -> list[float]:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"llama.cpp step timer died (exit {self.process.wait()})")
        return [float(ms) / 1e3 for ms in line.split()]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


class OurStep:
    """Our decoder with `batch` rows prefilled; `round()` runs `steps` steps and rewinds to the prefix."""

    def __init__(self, decoder, embeds, *, steps: int):
        import torch

        self.decoder, self.steps = decoder, steps
        self.cache = decoder.new_cache(embeds.shape[0], embeds.shape[1] + steps)
        decoder.prefill(embeds, torch.ones(embeds.shape[:2]), self.cache)
        self.prefix, self.tokens = embeds.shape[1], torch.arange(embeds.shape[0]) + 100

    def round(self) -> list[float]:
        times = []
        for _ in range(self.steps):
            start = time.perf_counter()
            self.decoder.step(self.tokens, self.cache)
            times.append(time.perf_counter() - start)
        self.cache.length = self.prefix
        self.cache.positions -= self.steps
        return times


def gguf_files(lm, source: Path, cache: Path, seed: int) -> dict[str, Path]:
    """The random weights in each llama.cpp type, written once (gguf-py from the same llama.cpp source)."""
    sys.path.insert(0, str(source / "gguf-py"))
    from vlm_tools.bench.gguf_export import write_gguf

    paths = {}
    for _, qtype in PAIRS:
        path = cache / "gguf" / f"smollm135m-shapes-seed{seed}-{qtype}.gguf"
        if not path.exists():
            print(f"writing {path}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_gguf(lm, path.with_suffix(".part"), qtype).rename(path)
        paths[qtype] = path
    return paths


def interleaved(runners: dict[tuple, object], rounds: int) -> dict[tuple, list[float]]:
    """Every runner's round, `rounds` times, ours and llama.cpp's alternating first; one untimed warm-up."""
    for runner in runners.values():
        runner.round()
    times = {key: [] for key in runners}
    keys = list(runners)
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        for key in (keys if r % 2 == 0 else keys[::-1]):
            times[key] += runners[key].round()
    return times


def results_table(medians: dict[tuple, float], batches: list[int], bound_s: dict[int, float]) -> list[dict]:
    rows = []
    for ours, theirs in PAIRS:
        for b in batches:
            a, l = medians[(ours, b)], medians[(theirs, b)]
            bound = bound_s[b] if ours == "fp32" else math.nan       # the probe's bound is for fp32 weights
            rows.append({"ours": ours, "llama_cpp": theirs, "batch": b, "ours_ms": a * 1e3, "llama_cpp_ms": l * 1e3,
                         "ours_over_llama_cpp": a / l, "fp32_read_bound_ms": bound * 1e3,
                         "llama_cpp_over_bound": l / bound})
    return rows


def print_table(rows: list[dict]) -> None:
    """bound: the bytes an fp32 step reads (weights + KV cache) over the probe's best bandwidth; a llama/bound
    below 1 would mean the probe underestimates the machine."""
    print(f"{'ours':>5} {'llama.cpp':>9} {'batch':>5} {'ours ms':>8} {'llama ms':>9} {'ours/llama':>10} "
          f"{'bound ms':>8} {'llama/bound':>11}")
    for r in rows:
        bound = "" if math.isnan(r["fp32_read_bound_ms"]) else \
            f"{r['fp32_read_bound_ms']:8.2f} {r['llama_cpp_over_bound']:11.2f}"
        print(f"{r['ours']:>5} {r['llama_cpp']:>9} {r['batch']:5d} {r['ours_ms']:8.2f} {r['llama_cpp_ms']:9.2f} "
              f"{r['ours_over_llama_cpp']:10.2f} {bound}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--prefix", type=int, default=205, help="prefix positions per row (197 image + prompt)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=8, help="decode steps per round, each side")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds after one warm-up round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", default=None, help="llama-cpp-python sdist version (default: the pinned one)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs for the first build")
    parser.add_argument("--skip-probe", action="store_true", help="no machine probe (no bound column)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/llama-cpp-compare.json"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from minivlm.decoding.llama_decoder import LlamaDecoder
    from minivlm.model.shapes import full_language_config
    from vlm_tools.bench import llama_cpp_build as build
    from vlm_tools.bench.decode_step import prefixes, step_bytes
    from vlm_tools.bench.machine import best_of, measure_machine
    from vlm_tools.bench.probe import format_readings

    args = parse_args(argv)
    version, cache = args.version or build.DEFAULT_VERSION, args.cache_dir or build.DEFAULT_CACHE
    source, timer = build.ensure_llama_cpp(version, cache=cache, jobs=args.jobs)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    lm = LlamaForCausalLM(full_language_config()).eval()            # decode_step.py's weights
    ggufs = gguf_files(lm, source, cache, args.seed)
    machine = [] if args.skip_probe else [measure_machine(step_bytes(lm, 1, 0))]
    runners = {}
    with torch.inference_mode():
        for ours, theirs in PAIRS:
            decoder = LlamaDecoder.from_hf(lm, precision=ours)
            for b in args.batches:
                runners[(ours, b)] = OurStep(decoder, prefixes(lm, b, args.prefix, b), steps=args.steps)
                runners[(theirs, b)] = LlamaCppStep(timer, ggufs[theirs], threads=args.threads, batch=b,
                                                    prefix=args.prefix, steps=args.steps)
        print(f"threads {args.threads}, prefix {args.prefix}, {args.rounds} rounds x {args.steps} steps each side",
              flush=True)
        try:
            times = interleaved(runners, args.rounds)
        finally:
            for runner in runners.values():
                if isinstance(runner, LlamaCppStep):
                    runner.close()
    medians = {key: statistics.median(v) for key, v in times.items()}
    report = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "command": sys.argv,
              "llama_cpp_python_sdist": version, "threads": args.threads, "prefix": args.prefix,
              "steps_per_round": args.steps, "rounds": args.rounds, "seed": args.seed}
    bound = {b: float("nan") for b in args.batches}
    if machine:
        machine = best_of(machine[0], measure_machine(step_bytes(lm, 1, 0)))
        gbps = machine.rates.bandwidth_gb_s
        bound = {b: step_bytes(lm, b, args.prefix + args.steps // 2) / (gbps * 1e9) for b in args.batches}
        print(f"machine probe, best of before and after:\n{format_readings(machine.readings)}")
        report["machine"] = {**asdict(machine), **machine.summary(), "rates": asdict(machine.rates)}
    rows = results_table(medians, args.batches, bound)
    print_table(rows)
    report["results"] = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
                         for r in rows]
    report["step_ms"] = {f"{k[0]}_batch{k[1]}": [t * 1e3 for t in v] for k, v in times.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
