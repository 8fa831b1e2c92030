"""The generator's artifacts in a Triton model version folder: the language model and its tokenizer.

`version_dir/language_model/` is a LlamaForCausalLM `save_pretrained` folder (safetensors) and
`version_dir/tokenizer/` the tokenizer's. Loading is strict: a missing, unexpected or mis-shaped weight, or
a tokenizer that does not belong to the model, is a CheckpointError, never a warning.
"""
from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from minivlm.errors import CheckpointError
from minivlm.model.vlm import MiniVLM

log = logging.getLogger(__name__)

LANGUAGE_MODEL_DIR = "language_model"
TOKENIZER_DIR = "tokenizer"


def write_generator_artifacts(vlm: MiniVLM, version_dir: str | Path) -> Path:
    version_dir = Path(version_dir)
    log.info("writing language model and tokenizer to %s", version_dir)
    vlm.language_model.save_pretrained(version_dir / LANGUAGE_MODEL_DIR)      # model.safetensors + config.json
    vlm.tokenizer.save_pretrained(version_dir / TOKENIZER_DIR)
    return version_dir


def load_generator_artifacts(version_dir: str | Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """-> (language model in eval mode, tokenizer); raises CheckpointError naming what is wrong."""
    lm_dir, tokenizer_dir = Path(version_dir) / LANGUAGE_MODEL_DIR, Path(version_dir) / TOKENIZER_DIR
    for folder in (lm_dir, tokenizer_dir):
        if not folder.is_dir():
            raise CheckpointError(f"{version_dir}: missing {folder.name!r} folder (run the generator export)")
    try:
        # ignore_mismatched_sizes: report wrong shapes in `info` (named below) instead of raising without names
        lm, info = LlamaForCausalLM.from_pretrained(lm_dir, output_loading_info=True, local_files_only=True,
                                                    ignore_mismatched_sizes=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{version_dir}: cannot load generator artifacts ({error})") from None
    problems = [f"{kind} {sorted(keys)}" for kind, keys in
                (("missing keys", info["missing_keys"]), ("unexpected keys", info["unexpected_keys"])) if keys]
    problems += [f"key {key!r}: checkpoint shape {tuple(found)}, model expects {tuple(expected)}"
                 for key, found, expected in sorted(info["mismatched_keys"])]
    if problems:
        raise CheckpointError(f"{lm_dir}: " + "; ".join(problems))
    _check_tokenizer(lm, tokenizer, tokenizer_dir)
    return lm.eval(), tokenizer


def _check_tokenizer(lm: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    if len(tokenizer) > lm.config.vocab_size:
        raise CheckpointError(f"{folder}: tokenizer has {len(tokenizer)} tokens; the model's vocabulary "
                              f"is {lm.config.vocab_size}")
    if tokenizer.eos_token_id != lm.config.eos_token_id:
        raise CheckpointError(f"{folder}: tokenizer EOS id {tokenizer.eos_token_id} differs from the "
                              f"model's eos_token_id {lm.config.eos_token_id}")
