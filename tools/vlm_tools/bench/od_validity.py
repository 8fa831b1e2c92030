"""How many detection answers parse as JSON, with and without the grammar, on the full-size random-weight bench
model (the bench's recipe: EOS suppressed, ids confined to the tokenizer, so every answer runs to its limit).

    python -m vlm_tools.bench.od_validity [--requests 16] [--max-new-tokens 150]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tqdm import tqdm

from minivlm.decoding.sampling import SamplingParams
from minivlm.model.factory import full_size_vlm
from minivlm.processing.detection import parse_detection
from minivlm.processing.images import preprocess_image_bytes
from vlm_tools.bench.bench_model import confine_to_tokenizer, suppress_eos
from vlm_tools.bench.workload import synthetic_image


def od_validity(*, requests: int, max_new_tokens: int, batch: int = 8, seed: int = 0) -> dict[str, float]:
    vlm = full_size_vlm(seed=seed)
    suppress_eos(vlm.language_model, vlm.eos_token_id)
    confine_to_tokenizer(vlm.language_model, len(vlm.tokenizer))
    prompt = vlm.prompt_ids("od")
    results = {}
    for name, grammar in (("constrained", vlm.detection_grammar), ("unconstrained", None)):
        valid = 0
        for start in tqdm(range(0, requests, batch), desc=f"OD answers, {name}"):
            images = [synthetic_image(seed + i) for i in range(start, min(start + batch, requests))]
            embeds = vlm.encode_images(np.stack([preprocess_image_bytes(image) for image in images]))
            params = [SamplingParams(max_new_tokens, grammar=grammar)] * len(images)
            for generation in vlm.generate(list(embeds), [prompt] * len(images), params):
                valid += parse_detection(vlm.tokenizer.decode(list(generation.token_ids))).json_valid
        results[name] = valid / requests
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = od_validity(requests=args.requests, max_new_tokens=args.max_new_tokens)
    print(json.dumps({"requests": args.requests, "max_new_tokens": args.max_new_tokens,
                      "json_valid_share": result}, indent=2))


if __name__ == "__main__":
    main()
