"""Decode step: HF/transformers vs minivlm.decoding.llama_decoder, against the memory-bandwidth bound, in one interleaved run.

    python -m vlm_tools.bench.decode_step [--threads 2] [--repeats 15] [--variants bf16 int8]

On a CPU shared with other busy processes use --threads 1: with 2, every parallel region waits for a
preempted OpenMP thread and all numbers (HF's too) swing by several times.

Full-size SmolLM-135M shapes with random weights. Every repetition times one step of every (batch, backend)
pair, so a noisy, shared CPU slows all of them alike; medians are printed. The bound is the bytes one step
must read (weights + the KV cache so far) over the machine's bandwidth: the best of several kernels
(vlm_tools.bench.probe), probed before and after the steps.
Opt-in weight formats (--variants) are also timed, and their accuracy measured against fp32: top-1 agreement
and max |logit difference| over teacher-forced steps (random weights: a trained model's logits are more
decisive, so agreement there should be higher).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DynamicCache, LlamaForCausalLM

from minivlm.decoding.llama_decoder import LlamaDecoder
from minivlm.model.shapes import full_language_config
from vlm_tools.bench.machine import best_of, measure_machine
from vlm_tools.bench.probe import format_readings


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class HFStep:
    """HF's KV-cached step as minivlm.decoding.generate's backend="hf" runs it."""

    def __init__(self, lm, embeds: torch.Tensor):
        self.lm, self.cache = lm, DynamicCache()
        self.mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        lm(inputs_embeds=embeds, attention_mask=self.mask, cache=self.cache, use_cache=True, logits_to_keep=1)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=1)
        position = torch.full((len(tokens), 1), self.mask.shape[1] - 1)
        return self.lm(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=position,
                       cache=self.cache, use_cache=True).logits[:, -1]


class FastStep:
    def __init__(self, decoder: LlamaDecoder, embeds: torch.Tensor, steps: int):
        self.decoder, self.cache = decoder, decoder.new_cache(embeds.shape[0], embeds.shape[1] + steps)
        self.logits = decoder.prefill(embeds, torch.ones(embeds.shape[:2]), self.cache)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(tokens, self.cache)


def step_bytes(lm, batch: int, length: int) -> int:
    """Weights (the tied embedding read once, as the lm_head) + every layer's K and V up to `length`."""
    c = lm.config
    kv = 2 * c.num_hidden_layers * batch * c.num_key_value_heads * length * (c.hidden_size // c.num_attention_heads)
    return sum(p.numel() for p in lm.parameters()) * 4 + kv * 4


def prefixes(lm, batch: int, length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(lm.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    return lm.get_input_embeddings()(ids).detach()                     # (B, L, D)


@torch.inference_mode()
def time_steps(lm, decoders: dict[str, LlamaDecoder], args) -> dict:
    runners = {(b, "hf"): HFStep(lm, prefixes(lm, b, args.prefix, b)) for b in args.batches}
    runners |= {(b, name): FastStep(d, prefixes(lm, b, args.prefix, b), args.repeats + 2)
                for b in args.batches for name, d in decoders.items()}
    tokens = {b: torch.arange(b) + 100 for b in args.batches}
    # warm-up (allocator, thread pools), and the fast decoder's distance from HF on identical inputs
    first = {key: run(tokens[key[0]]) for key, run in runners.items()}
    diff = max(float((first[(b, "hf")] - first[(b, "fp32")]).abs().max()) for b in args.batches)
    times = {key: [] for key in runners}
    for _ in range(args.repeats):
        for (b, name), run in runners.items():
            times[(b, name)].append(timed(lambda: run(tokens[b])))
    return {key: statistics.median(v) for key, v in times.items()} | {"hf_diff": diff}


@torch.inference_mode()
def time_prefill(lm, decoders: dict[str, LlamaDecoder], args) -> dict[str, float]:
    embeds = prefixes(lm, 1, args.prefix, 0)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    runs = {"hf": lambda: lm(inputs_embeds=embeds, attention_mask=mask, cache=DynamicCache(), use_cache=True,
                             logits_to_keep=1)}
    runs |= {name: (lambda d=d: d.prefill(embeds, mask, d.new_cache(1, args.prefix))) for name, d in decoders.items()}
    times = {name: [] for name in runs}
    for _ in range(args.prefill_repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: statistics.median(v) for name, v in times.items()}


@torch.inference_mode()
def accuracy(lm, reference: LlamaDecoder, variant: LlamaDecoder, args) -> tuple[float, float]:
    """Teacher-forced on fp32's greedy tokens: (top-1 agreement, max |logit difference|)."""
    embeds = prefixes(lm, 4, args.prefix, 7)
    runs = [FastStep(d, embeds, args.accuracy_steps) for d in (reference, variant)]
    logits = [run.logits for run in runs]
    agree, total, worst = 0, 0, 0.0
    for _ in range(args.accuracy_steps):
        tokens = logits[0].argmax(-1)
        agree += int((logits[1].argmax(-1) == tokens).sum())
        total += len(tokens)
        worst = max(worst, float((logits[0] - logits[1]).abs().max()))
        logits = [run(tokens) for run in runs]
    return agree / total, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per (batch, backend)")
    parser.add_argument("--prefix", type=int, default=205, help="prefix positions (197 image + prompt)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--prefill-repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=[], choices=["bf16", "int8"], help="opt-in weight formats")
    parser.add_argument("--accuracy-steps", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(full_language_config()).eval()
    decoders = {name: LlamaDecoder.from_hf(lm, precision=name) for name in ["fp32", *args.variants]}
    print(f"threads {args.threads}, prefix {args.prefix}, median of {args.repeats} interleaved steps")

    weight_bytes = step_bytes(lm, 1, 0)
    before = measure_machine(weight_bytes)
    t = time_steps(lm, decoders, args)
    machine = best_of(before, measure_machine(weight_bytes))
    gbps = machine.rates.bandwidth_gb_s
    print(f"machine probe, best of before and after the steps:\n{format_readings(machine.readings)}")
    names = ["hf", *decoders]
    header = " ".join(f"{n + ' ms':>9}" for n in names)
    print(f"{'batch':>5} {'bound ms':>9} {header} {'hf/fp32':>8} {'fp32/bound':>10}")
    for b in args.batches:
        bound = step_bytes(lm, b, args.prefix + args.repeats // 2) / gbps / 1e6
        cells = " ".join(f"{t[(b, n)] * 1e3:9.1f}" for n in names)
        fp32 = t[(b, "fp32")]
        print(f"{b:5d} {bound:9.1f} {cells} {t[(b, 'hf')] / fp32:8.2f} {fp32 * 1e3 / bound:10.2f}")

    print(f"fp32 vs HF, same inputs: max |logit diff| {t['hf_diff']:.2g}")
    p = time_prefill(lm, decoders, args)
    print(f"prefill {args.prefix} positions, batch 1: " + ", ".join(f"{n} {v * 1e3:.0f} ms" for n, v in p.items()))
    for name in args.variants:
        agree, worst = accuracy(lm, decoders["fp32"], decoders[name], args)
        print(f"{name} vs fp32 over {args.accuracy_steps} steps x 4 rows: top-1 agreement {agree:.1%}, "
              f"max |logit diff| {worst:.3g}")


if __name__ == "__main__":
    main()
