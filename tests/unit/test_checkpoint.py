"""Loading the notebook's `mini-vlm-routing/` folder: same outputs as the saved model, and strict errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minivlm.errors import CheckpointError
from minivlm.model.artifacts import LANGUAGE_MODEL_DIR, load_generator_artifacts, write_generator_artifacts
from minivlm.model.artifacts import TOKENIZER_DIR as GENERATOR_TOKENIZER_DIR
from minivlm.model.checkpoint import IMAGE_PROCESSOR_DIR, TOKENIZER_DIR, VLM_FILE, load_vlm, read_checkpoint


@pytest.fixture(scope="module")
def loaded(notebook_dir):
    return load_vlm(notebook_dir)


@pytest.fixture
def folder(notebook_dir, tmp_path) -> Path:
    """A private copy of the notebook folder (and its base models) that a test may break."""
    root = shutil.copytree(notebook_dir.parent, tmp_path / "root")
    checkpoint = root / notebook_dir.name
    data = torch.load(checkpoint / VLM_FILE, weights_only=True)
    data["config"]["vision_model_name"] = str(root / "base" / "vit")
    data["config"]["lm_model_name"] = str(root / "base" / "lm")
    torch.save(data, checkpoint / VLM_FILE)
    return checkpoint


def _edit(folder: Path, change) -> None:
    data = torch.load(folder / VLM_FILE, weights_only=True)
    change(data)
    torch.save(data, folder / VLM_FILE)


def _load_error(folder: Path, **overrides) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_vlm(folder, **overrides)
    return str(caught.value)


def test_loaded_model_gives_the_saved_models_outputs(loaded, tiny_vlm):
    pixels = torch.rand((2, 3, 224, 224), generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(loaded.encode_images(pixels), tiny_vlm.encode_images(pixels), rtol=0, atol=0)
    ids = torch.tensor([tiny_vlm.prompt_ids("vqa", "what colour is the car?")])
    with torch.inference_mode():
        torch.testing.assert_close(loaded.language_model(ids).logits, tiny_vlm.language_model(ids).logits,
                                   rtol=0, atol=0)
    assert loaded.tokenizer.get_vocab() == tiny_vlm.tokenizer.get_vocab()
    image = pixels[0].numpy()
    assert loaded.reference_answer(image, "caption") == tiny_vlm.reference_answer(image, "caption")


def test_override_names_load_explicit_local_folders(folder, tiny_vlm):
    """The notebook recorded hub names; --vision-model/--language-model point at local copies instead."""
    def hub_names(data):
        data["config"]["vision_model_name"] = "google/vit-base-patch16-224"
        data["config"]["lm_model_name"] = "HuggingFaceTB/SmolLM-135M"
    _edit(folder, hub_names)
    vlm = load_vlm(folder, vision_model=str(folder.parent / "base" / "vit"),
                   language_model=str(folder.parent / "base" / "lm"))
    pixels = np.zeros((3, 224, 224), np.float32)
    assert vlm.reference_answer(pixels, "od") == tiny_vlm.reference_answer(pixels, "od")


def test_missing_folder(tmp_path):
    message = _load_error(tmp_path / "nowhere")
    assert "nowhere" in message and VLM_FILE in message


@pytest.mark.parametrize("name", [VLM_FILE, TOKENIZER_DIR, IMAGE_PROCESSOR_DIR])
def test_missing_file(folder, name):
    target = folder / name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert f"missing {name!r}" in _load_error(folder)


def test_unreadable_checkpoint_file(folder):
    (folder / VLM_FILE).write_bytes(b"not a pickle")
    assert "cannot be read as a PyTorch checkpoint" in _load_error(folder)


def test_missing_top_level_key(folder):
    _edit(folder, lambda data: data.pop("projector_state_dict"))
    assert "missing top-level key(s) ['projector_state_dict']" in _load_error(folder)


def test_missing_config_key(folder):
    _edit(folder, lambda data: data["config"].pop("vision_dim"))
    assert "config lacks ['vision_dim']" in _load_error(folder)


def test_projector_key_missing(folder):
    _edit(folder, lambda data: data["projector_state_dict"].pop("projection.0.weight"))
    message = _load_error(folder)
    assert "projector_state_dict" in message and "missing key 'projection.0.weight'" in message


def test_unexpected_key(folder):
    _edit(folder, lambda data: data["projector_state_dict"].update({"projection.9.weight": torch.zeros(3)}))
    assert "unexpected key 'projection.9.weight'" in _load_error(folder)


def test_wrong_shape_names_key_and_both_shapes(folder):
    _edit(folder, lambda data: data["projector_state_dict"].update({"projection.3.weight": torch.zeros(64, 60)}))
    message = _load_error(folder)
    assert "'projection.3.weight'" in message and "(64, 60)" in message and "(64, 64)" in message


def test_language_model_wrong_shape(folder, tiny_vlm):
    _edit(folder, lambda data: data["language_model_state_dict"].update(
        {"model.embed_tokens.weight": torch.zeros(100, 64)}))
    message = _load_error(folder)
    assert "language_model_state_dict" in message and "'model.embed_tokens.weight'" in message
    assert "(100, 64)" in message and f"{tuple(tiny_vlm.language_model.model.embed_tokens.weight.shape)}" in message


def test_vision_dim_mismatch(folder):
    _edit(folder, lambda data: data["config"].update(vision_dim=48))
    message = _load_error(folder)
    assert "vision_dim=48" in message and "hidden size 32" in message


def test_vision_model_folder_missing_weights(folder):
    """from_pretrained alone would fill the gap with random weights and only log it."""
    path = folder.parent / "base" / "vit" / "model.safetensors"
    weights = load_file(path)
    weights.pop("embeddings.cls_token")
    save_file(weights, path, metadata={"format": "pt"})
    message = _load_error(folder)
    assert "missing weights" in message and "cls_token" in message


@pytest.mark.parametrize("key, value, shown", [
    ("image_mean", [0.485, 0.456, 0.406], "image_mean is [0.485, 0.456, 0.406]"),
    ("size", {"height": 256, "width": 256}, "size is {'height': 256, 'width': 256}"),
    ("rescale_factor", 1.0, "rescale_factor is 1.0"),
])
def test_wrong_image_processor_settings(folder, key, value, shown):
    path = folder / IMAGE_PROCESSOR_DIR / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    settings[key] = value
    path.write_text(json.dumps(settings))
    assert shown in _load_error(folder)


def test_read_checkpoint_exposes_recorded_names(folder):
    checkpoint = read_checkpoint(folder)
    assert checkpoint.vision_model_name.endswith("vit") and checkpoint.lm_model_name.endswith("lm")


@pytest.mark.parametrize("key, what", [("vision_model_name", "vision model"), ("lm_model_name", "language model")])
def test_missing_base_model_folder(folder, key, what):
    missing = str(folder.parent / "base" / "not_there")
    _edit(folder, lambda data: data["config"].update({key: missing}))
    assert f"{what} {missing!r} cannot be loaded" in _load_error(folder)


# --- the generator's artifacts (minivlm.model.artifacts): written by the export, loaded by the served generator -----

@pytest.fixture(scope="module")
def generator_dir(tiny_vlm, tmp_path_factory) -> Path:
    return write_generator_artifacts(tiny_vlm, tmp_path_factory.mktemp("generator") / "1")


@pytest.fixture
def broken_generator_dir(generator_dir, tmp_path) -> Path:
    return shutil.copytree(generator_dir, tmp_path / "1")


def test_generator_artifacts_round_trip(generator_dir, tiny_vlm):
    assert (generator_dir / LANGUAGE_MODEL_DIR / "model.safetensors").is_file()
    lm, tokenizer = load_generator_artifacts(generator_dir)
    assert not lm.training
    ids = torch.tensor([tiny_vlm.prompt_ids("vqa", "is the dog happy?")])
    with torch.inference_mode():
        torch.testing.assert_close(lm(ids).logits, tiny_vlm.language_model(ids).logits, rtol=0, atol=0)
    assert tokenizer.get_vocab() == tiny_vlm.tokenizer.get_vocab()
    assert tokenizer.eos_token_id == lm.config.eos_token_id == tiny_vlm.eos_token_id


@pytest.mark.parametrize("name", [LANGUAGE_MODEL_DIR, GENERATOR_TOKENIZER_DIR])
def test_generator_artifacts_missing_folder(broken_generator_dir, name):
    shutil.rmtree(broken_generator_dir / name)
    with pytest.raises(CheckpointError, match=f"missing '{name}' folder"):
        load_generator_artifacts(broken_generator_dir)


def _edit_weights(folder: Path, change) -> None:
    path = folder / LANGUAGE_MODEL_DIR / "model.safetensors"
    weights = load_file(path)
    change(weights)
    save_file(weights, path, metadata={"format": "pt"})


def test_generator_artifacts_wrong_shape_names_key_and_both_shapes(broken_generator_dir):
    _edit_weights(broken_generator_dir, lambda w: w.update({"model.norm.weight": torch.zeros(10)}))
    with pytest.raises(CheckpointError, match=r"'model.norm.weight': checkpoint shape \(10,\), model expects \(64,\)"):
        load_generator_artifacts(broken_generator_dir)


def test_generator_artifacts_missing_and_unexpected_weights(broken_generator_dir):
    _edit_weights(broken_generator_dir, lambda w: w.update({"extra.weight": w.pop("model.norm.weight")}))
    with pytest.raises(CheckpointError, match=r"missing keys \['model.norm.weight'\]; unexpected keys \['extra"):
        load_generator_artifacts(broken_generator_dir)
