"""The whole VLM in PyTorch: the in-process reference that export and serving are checked against."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from minivlm.decoding.generate import Backend, decode, reference_greedy
from minivlm.decoding.json_constraint import DetectionGrammar
from minivlm.decoding.llama_decoder import LlamaDecoder
from minivlm.decoding.sampling import Generation, SamplingParams
from minivlm.model.vision import VisionEncoder
from minivlm.processing.prompts import build_prompt


@dataclass
class MiniVLM:
    vision: VisionEncoder
    language_model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerBase

    def __post_init__(self):
        self.vision.eval()
        self.language_model.eval()

    @functools.cached_property
    def detection_grammar(self) -> DetectionGrammar:
        return DetectionGrammar.for_tokenizer(self.tokenizer, int(self.language_model.config.vocab_size))

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def prompt_ids(self, task: str, question: str = "") -> list[int]:
        return list(self.tokenizer(build_prompt(task, question))["input_ids"])

    @torch.inference_mode()
    def encode_images(self, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, N, D) image embeddings."""
        return self.vision(torch.as_tensor(pixel_values, dtype=torch.float32))

    @torch.inference_mode()
    def prefix(self, image_embeds: torch.Tensor, prompt_ids: list[int]) -> torch.Tensor:
        """(N, D) image embeds + prompt -> (N + T, D): the notebook's sequence layout."""
        token_embeds = self.language_model.get_input_embeddings()(torch.tensor(prompt_ids))
        return torch.cat([torch.as_tensor(image_embeds, dtype=token_embeds.dtype), token_embeds], dim=0)

    def generate(self, image_embeds: list[torch.Tensor], prompts: list[list[int]],
                 params: list[SamplingParams], *, backend: Backend | LlamaDecoder = "auto") -> list[Generation]:
        prefixes = [self.prefix(e, p) for e, p in zip(image_embeds, prompts)]
        return decode(self.language_model, prefixes, params, self.eos_token_id, backend=backend)

    def reference_answer(self, pixel_values: np.ndarray, task: str, question: str = "",
                         max_new_tokens: int = 10, *, json_constraint: bool = True) -> tuple[Generation, str]:
        """Greedy answer by the notebook's cache-free loop, with its decoded text; a detection answer under the
        JSON grammar unless `json_constraint` is False, as the server decodes it."""
        embeds = self.encode_images(pixel_values[None])[0]
        grammar = self.detection_grammar if task == "od" and json_constraint else None
        generation = reference_greedy(self.language_model, self.prefix(embeds, self.prompt_ids(task, question)),
                                      max_new_tokens, self.eos_token_id, grammar=grammar)
        return generation, self.tokenizer.decode(list(generation.token_ids), skip_special_tokens=True)
