"""OD answers are JSON by construction: the grammar mask, closing within the token limit, and answers that
already conform keep every token. Logits are scripted, so the tests say exactly what the model "wants"."""
from __future__ import annotations

import json

import pytest
import torch

from minivlm.decoding.json_constraint import DetectionGrammar
from minivlm.decoding.sampling import Sampler, SamplingParams, next_tokens
from minivlm.processing.detection import parse_detection

CONFORMING = '{"objects": [{"label": "red square", "bbox": [0.12, 0.5, 1, 0.333]}, ' \
             '{"label": "blue circle", "bbox": [0, 0.25, 0.5, 0.75]}]}'


@pytest.fixture(scope="module")
def grammar(tiny_vlm):
    return DetectionGrammar.for_tokenizer(tiny_vlm.tokenizer, tiny_vlm.language_model.config.vocab_size)


def run(grammar, wanted, max_new_tokens: int, *, temperature: float = 0.0, seed: int = 0) -> list[int]:
    """Decode one row whose logits at each step come from `wanted(step)`; stop at EOS or the limit."""
    sampler = Sampler(SamplingParams(max_new_tokens, temperature=temperature, seed=seed, grammar=grammar))
    tokens = []
    for step in range(max_new_tokens):
        (token,) = next_tokens(wanted(step).unsqueeze(0), [sampler])
        if token == grammar.eos_token_id:
            break
        tokens.append(token)
    return tokens


def scripted(ids: list[int], eos: int, vocab: int):
    """Logits that put the script's next token (then EOS) first, everything else in a fixed random order."""
    noise = torch.randn(vocab, generator=torch.Generator().manual_seed(0))
    def wanted(step: int) -> torch.Tensor:
        logits = noise.clone()
        logits[ids[step] if step < len(ids) else eos] = 100.0
        return logits
    return wanted


def test_a_conforming_greedy_answer_keeps_every_token(grammar, tiny_vlm):
    ids = tiny_vlm.tokenizer.encode(CONFORMING, add_special_tokens=False)
    wanted = scripted(ids, grammar.eos_token_id, grammar.vocab_size)
    assert run(grammar, wanted, len(ids) + 1) == ids                   # just enough room for EOS
    assert run(grammar, wanted, 150) == ids


def test_a_model_that_never_closes_is_closed_in_time(grammar, tiny_vlm):
    """Random logits with every closing character pushed down: the model would ramble on forever."""
    tokenizer = tiny_vlm.tokenizer
    closers = [i for i in range(len(tokenizer)) if any(c in tokenizer.decode([i]) for c in ']}"')]
    for seed in range(4):
        noise = torch.Generator().manual_seed(seed)
        def wanted(step: int) -> torch.Tensor:
            logits = torch.randn(grammar.vocab_size, generator=noise)
            logits[closers] -= 50.0
            logits[grammar.eos_token_id] -= 50.0
            return logits
        for limit in (12, 20, 33, 47, 90, 150):
            tokens = run(grammar, wanted, limit, temperature=0.0 if seed % 2 else 1.0, seed=seed)
            text = tokenizer.decode(tokens)
            assert len(tokens) < limit, (limit, text)                  # EOS fits too
            parsed = parse_detection(text)
            assert parsed.json_valid, text
            assert all(0 <= v <= 1 for obj in json.loads(text)["objects"] for v in obj["bbox"])
            # a box of numbers in [0, 1] can still overhang the image (x + w > 1): the parser drops those


def test_an_answer_that_does_not_conform_is_changed_to_one_that_does(grammar, tiny_vlm):
    ids = tiny_vlm.tokenizer.encode('{"objects": [{"label": "cat", "bbox": [2, 0.5]}]}', add_special_tokens=False)
    tokens = run(grammar, scripted(ids, grammar.eos_token_id, grammar.vocab_size), 80)
    text = tiny_vlm.tokenizer.decode(tokens)
    assert tokens != ids and parse_detection(text).json_valid
    assert text.startswith('{"objects": [{"label": "cat", "bbox": [')     # kept up to the first bad token


def test_unconstrained_rows_are_untouched(grammar):
    logits = torch.randn(3, grammar.vocab_size, generator=torch.Generator().manual_seed(1))
    samplers = [Sampler(SamplingParams(5)), Sampler(SamplingParams(5, grammar=grammar)), Sampler(SamplingParams(5))]
    tokens = next_tokens(logits, samplers)
    assert tokens[0] == int(logits[0].argmax()) and tokens[2] == int(logits[2].argmax())
    assert samplers[0].free and not samplers[1].free
