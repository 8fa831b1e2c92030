"""Distance-aware training targets for the coordinate tokens of OD answers.

Every box coordinate is written "0.NN", and "NN" is one of a hundred tokens that start out unrelated. With
one-hot targets, answering 33 for 32 is as wrong as answering 90, so the decoder long emits the commonest
values. Spreading each target over its neighbours (a Gaussian over the value) rewards being close, so coarse
positions are learnt first and refined later. Greedy decoding is unchanged: the target's peak is the value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

VALUES = 100                # "00" .. "99"


class CoordinateTargets:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, sigma: float):
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(tokenizer)
        self.value_of = torch.full((self.vocab_size,), -1, dtype=torch.long)   # token id -> value, -1 if none
        self.token_of = torch.full((VALUES,), -1, dtype=torch.long)            # value -> token id, -1 if none
        for value in range(VALUES):
            token_id = vocab.get(f"{value:02d}")
            if token_id is not None:
                self.value_of[token_id], self.token_of[value] = value, token_id
        offsets = torch.arange(VALUES)
        weights = torch.exp(-((offsets[None] - offsets[:, None]).float() ** 2) / (2 * sigma ** 2))
        weights[:, self.token_of < 0] = 0.0                  # values without a token of their own get nothing
        self.weights = weights / weights.sum(dim=1, keepdim=True)                 # (value, neighbour value)

    def soft(self, target_ids: torch.Tensor) -> torch.Tensor:
        """(K,) target ids -> (K, vocab) target distributions: one-hot, or a Gaussian for coordinate tokens."""
        probs = F.one_hot(target_ids, self.vocab_size).float()
        values = self.value_of[target_ids]
        rows = torch.nonzero(values >= 0).squeeze(1)
        if len(rows):
            known = self.token_of >= 0
            spread = torch.zeros(len(rows), self.vocab_size)
            spread[:, self.token_of[known]] = self.weights[values[rows]][:, known]
            probs[rows] = spread
        return probs
