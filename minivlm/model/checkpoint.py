"""Load the notebook's checkpoint folder (`mini-vlm-routing/`) strictly, and write that format.

Files: `vlm_with_tags.pt` {projector_state_dict, language_model_state_dict, config{vision_model_name,
lm_model_name, vision_dim, language_dim}}, `tokenizer/` and `image_processor/` (save_pretrained folders),
and `task_classifier.pt` for the LSTM router. Base models come by hub name or local folder via
`from_pretrained`; a relative folder that exists beside the checkpoint folder is read from there, so a model
folder can be moved or committed whole (the demo model records `../base/vit`). Everything is validated before
a model is returned: nothing loads half-way.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# The PIL variant is ViTImageProcessor without torchvision (which this project does not install).
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM, ViTImageProcessorPil, ViTModel

from minivlm.errors import CheckpointError
from minivlm.model.vision import Projector, VisionEncoder
from minivlm.model.vlm import MiniVLM
from minivlm.processing.images import IMAGE_SIZE, MEAN, STD

log = logging.getLogger(__name__)

VLM_FILE = "vlm_with_tags.pt"
ROUTER_FILE = "task_classifier.pt"
TOKENIZER_DIR = "tokenizer"
IMAGE_PROCESSOR_DIR = "image_processor"
_VLM_KEYS = ("projector_state_dict", "language_model_state_dict", "config")
_CONFIG_KEYS = ("vision_model_name", "lm_model_name", "vision_dim", "language_dim")


@dataclass(frozen=True)
class NotebookCheckpoint:
    directory: Path
    config: dict
    projector_state: dict
    language_model_state: dict

    @property
    def vision_model_name(self) -> str:
        return self.config["vision_model_name"]

    @property
    def lm_model_name(self) -> str:
        return self.config["lm_model_name"]


def read_checkpoint(directory: str | Path) -> NotebookCheckpoint:
    directory = Path(directory)
    for name in (VLM_FILE, TOKENIZER_DIR, IMAGE_PROCESSOR_DIR):
        if not (directory / name).exists():
            raise CheckpointError(f"{directory}: missing {name!r} (expected the notebook's mini-vlm-routing/ folder)")
    data = _load_dict(directory / VLM_FILE, _VLM_KEYS)
    config = data["config"]
    missing = [key for key in _CONFIG_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{directory / VLM_FILE}: config lacks {missing}")
    return NotebookCheckpoint(directory, dict(config), data["projector_state_dict"],
                              data["language_model_state_dict"])


def _load_dict(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise CheckpointError(f"{path}: missing top-level key(s) {missing}; found {sorted(data)}")
    return data


def load_state_strict(module: nn.Module, state: dict, what: str, *, may_omit: tuple[str, ...] = ()) -> None:
    """Check every key and shape first, so a mismatch names them all and leaves the module untouched."""
    expected = module.state_dict()
    problems = [f"missing key {k!r} (model expects shape {tuple(v.shape)})"
                for k, v in expected.items() if k not in state and k not in may_omit]
    problems += [f"unexpected key {k!r} (shape {tuple(v.shape)})" for k, v in state.items() if k not in expected]
    problems += [f"key {k!r}: checkpoint shape {tuple(state[k].shape)}, model expects {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise CheckpointError(f"{what}: {shown}")
    module.load_state_dict(state, strict=not may_omit)


def check_image_processor(folder: Path) -> None:
    """Serving preprocesses images itself; refuse a processor whose settings it would not reproduce."""
    path = folder / "preprocessor_config.json"
    if not path.exists():
        raise CheckpointError(f"{folder}: missing preprocessor_config.json")
    settings = json.loads(path.read_text())
    expected = {"image_mean": [MEAN] * 3, "image_std": [STD] * 3, "rescale_factor": 1 / 255,
                "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
    for key, value in expected.items():
        found = settings.get(key, value)
        if (found != value) if not isinstance(value, float) else abs(found - value) > 1e-9:
            raise CheckpointError(f"{path}: {key} is {found!r}; serving implements {value!r}")


def load_vlm(directory: str | Path, *, vision_model: str | None = None,
             language_model: str | None = None) -> MiniVLM:
    """The notebook's folder -> MiniVLM. `vision_model`/`language_model` override the names it recorded."""
    checkpoint = read_checkpoint(directory)
    check_image_processor(checkpoint.directory / IMAGE_PROCESSOR_DIR)
    vision_name = vision_model or _beside(checkpoint.directory, checkpoint.vision_model_name)
    lm_name = language_model or _beside(checkpoint.directory, checkpoint.lm_model_name)
    log.info("vision model %s, language model %s", vision_name, lm_name)
    # dtype: weights stored in half precision (the committed demo model) are served in fp32
    vit, info = _base_model("vision model", vision_name, lambda: ViTModel.from_pretrained(
        vision_name, add_pooling_layer=False, output_loading_info=True, dtype=torch.float32))
    _check_base_weights(vision_name, info)
    projector = Projector(int(checkpoint.config["vision_dim"]), int(checkpoint.config["language_dim"]))
    _check_dim("vision_dim", checkpoint.config["vision_dim"], vit.config.hidden_size, vision_name)
    load_state_strict(projector, checkpoint.projector_state, f"{VLM_FILE} projector_state_dict")
    lm_config = _base_model("language model", lm_name, lambda: AutoConfig.from_pretrained(lm_name))
    lm = LlamaForCausalLM(lm_config)   # every weight comes from the checkpoint
    _check_dim("language_dim", checkpoint.config["language_dim"], lm.config.hidden_size, lm_name)
    tied = ("lm_head.weight",) if lm.config.tie_word_embeddings else ()
    load_state_strict(lm, checkpoint.language_model_state, f"{VLM_FILE} language_model_state_dict", may_omit=tied)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.directory / TOKENIZER_DIR)
    return MiniVLM(VisionEncoder(vit, projector), lm, tokenizer)


def _beside(directory: Path, name: str) -> str:
    """A relative base-model folder recorded by the checkpoint, resolved against the checkpoint folder."""
    candidate = directory / name
    return str(candidate.resolve()) if not Path(name).is_absolute() and candidate.is_dir() else name


def _base_model(what: str, name: str, load):
    """A base model that is neither a local folder nor in the hub cache is a CheckpointError, not an OSError."""
    try:
        return load()
    except OSError as error:
        raise CheckpointError(f"{what} {name!r} cannot be loaded: {error}") from None


def _check_base_weights(model_name: str, info: dict) -> None:
    """from_pretrained fills missing weights with random ones and only logs it; a classifier head is extra."""
    problems = [f"{kind} {sorted(map(str, info[key]))}" for kind, key in
                (("missing weights", "missing_keys"), ("mismatched shapes", "mismatched_keys")) if info[key]]
    if problems:
        raise CheckpointError(f"vision model {model_name}: " + "; ".join(problems))


def _check_dim(key: str, recorded, actual: int, model_name: str) -> None:
    if int(recorded) != actual:
        raise CheckpointError(f"{VLM_FILE} config {key}={recorded}, but {model_name} has hidden size {actual}")


def save_checkpoint(vlm: MiniVLM, directory: str | Path, *, vision_model_name: str, lm_model_name: str,
                    half: bool = False) -> Path:
    """Write the notebook's exact format (tests and the demo model use it); `half` stores fp16 weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cast = (lambda state: {k: v.half() if v.is_floating_point() else v for k, v in state.items()}) if half \
        else (lambda state: state)
    torch.save({
        "projector_state_dict": cast(vlm.vision.projector.state_dict()),
        "language_model_state_dict": cast(vlm.language_model.state_dict()),
        "config": {"vision_model_name": str(vision_model_name), "lm_model_name": str(lm_model_name),
                   "vision_dim": vlm.vision.vit.config.hidden_size,
                   "language_dim": vlm.language_model.config.hidden_size},
    }, directory / VLM_FILE)
    vlm.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[MEAN] * 3,
                      image_std=[STD] * 3).save_pretrained(directory / IMAGE_PROCESSOR_DIR)
    return directory
