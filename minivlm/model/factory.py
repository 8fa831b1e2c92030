"""Models built from configs with random weights: tiny ones for tests, full-size ones for benchmarks.

No hub is reachable here, so these stand in for google/vit-base-patch16-224 and SmolLM-135M. Base models
are written as `save_pretrained` folders, so the normal `from_pretrained` loading path is what gets tested.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, ViTConfig, ViTModel

from minivlm.model.checkpoint import save_checkpoint
from minivlm.model.shapes import full_language_config, full_vision_config, tiny_language_config, tiny_vision_config
from minivlm.model.vision import Projector, VisionEncoder
from minivlm.model.vlm import MiniVLM

EOS_TOKEN = "<|endoftext|>"     # SmolLM's EOS, also its pad token; id 0

_BASE_CORPUS = (
    "[CAPTION] [OD] [VQA] a photo of a red circle and a blue square on a green background. "
    '{"objects": [{"label": "person", "bbox": [0.1, 0.25, 0.5, 0.375]}, {"label": "dog", "bbox": [0.0, 0.9]}]} '
    "Is the dog happy? yes no What colour is the car? How many people are there? one two three four five "
    "Describe the image. Detect all objects. Where is the cat? left right top bottom above below next to "
    "0123456789 the of and in on with is are what where which how many colour color shape small large"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE like SmolLM's, trained offline; EOS doubles as pad like the notebook."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, unk_token=None)


def build_vlm(vision_config: ViTConfig, language_config: LlamaConfig, tokenizer: PreTrainedTokenizerFast,
              *, seed: int = 0) -> MiniVLM:
    torch.manual_seed(seed)
    vit = ViTModel(vision_config, add_pooling_layer=False)
    projector = Projector(vision_config.hidden_size, language_config.hidden_size)
    return MiniVLM(VisionEncoder(vit, projector), LlamaForCausalLM(language_config), tokenizer)


def tiny_vlm(*, seed: int = 0, vocab_size: int = 512) -> MiniVLM:
    tokenizer = train_tokenizer([_BASE_CORPUS] * 4, vocab_size)
    language = tiny_language_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    return build_vlm(tiny_vision_config(), language, tokenizer, seed=seed)


def full_size_vlm(*, seed: int = 0) -> MiniVLM:
    """ViT-base + SmolLM-135M shapes with random weights; the tokenizer only covers a small vocabulary."""
    tokenizer = train_tokenizer([_BASE_CORPUS] * 4, 1024)
    return build_vlm(full_vision_config(), full_language_config(), tokenizer, seed=seed)


def write_notebook_folder(vlm: MiniVLM, root: str | Path, *, with_router: bool = True,
                          half: bool = False, relative: bool = False) -> Path:
    """Write base models as local folders and `root/mini-vlm-routing/` in the notebook's format. The checkpoint
    records the base folders by absolute path (the checkpoint folder can be copied alone), or with `relative`
    as `../base/vit`, so the whole folder can move (the shipped demo model). `half` stores every weight in fp16
    (half the bytes; loading casts back to fp32)."""
    root = Path(root)
    vit_dir, lm_dir = root / "base" / "vit", root / "base" / "lm"
    vit = vlm.vision.vit
    if half:
        vit = copy.deepcopy(vit).half()
    vit.save_pretrained(vit_dir)
    vlm.language_model.config.save_pretrained(lm_dir)   # weights travel in the checkpoint
    vit_name, lm_name = ("../base/vit", "../base/lm") if relative else (vit_dir.resolve(), lm_dir.resolve())
    checkpoint_dir = save_checkpoint(vlm, root / "mini-vlm-routing", vision_model_name=str(vit_name),
                                     lm_model_name=str(lm_name), half=half)
    if with_router:
        from minivlm.routing.lstm import LSTMRouter, save_notebook_checkpoint
        torch.manual_seed(0)
        save_notebook_checkpoint(LSTMRouter(len(vlm.tokenizer)), checkpoint_dir / "task_classifier.pt")
    return checkpoint_dir
