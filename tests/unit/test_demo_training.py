"""Demo training: the packed format equals serving, a few steps write a loadable notebook checkpoint."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
import torch

from minivlm.model.checkpoint import load_vlm
from vlm_tools.demo.cli import add_demo_subcommands
from vlm_tools.demo.config import STATS_FILE, DemoConfig
from vlm_tools.demo.evaluate import evaluate_held_out
from vlm_tools.demo.packing import pack, scene_segments
from vlm_tools.demo.scenes import generate_scenes
from vlm_tools.demo.train import CHECKPOINT_DIR, build_demo_vlm, is_complete, save_demo, train_demo

TINY = DemoConfig(steps=3, batch_size=2, warmup_steps=1, vision_hidden=32, vision_layers=1, language_hidden=32,
                  language_layers=1, tokenizer_scenes=40, threads=2, refine_steps=0)


@pytest.fixture(scope="module")
def trained():
    return train_demo(TINY, progress=False)


def test_packed_rows_give_the_logits_of_separate_serving_rows():
    vlm = build_demo_vlm(TINY)
    scenes = list(generate_scenes(0, 2))
    batch = pack(vlm, scenes)
    lm = vlm.language_model
    with torch.no_grad():
        image_embeds = vlm.vision(batch.pixel_values)
        embeds = torch.cat([image_embeds, lm.get_input_embeddings()(batch.input_ids)], dim=1)
        hidden = lm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).last_hidden_state
        packed = lm.lm_head(hidden[batch.target_rows, batch.target_columns])
        separate = torch.cat([_serving_logits(vlm, image_embeds[i], segment)
                              for i, scene in enumerate(scenes) for segment in scene_segments(vlm, scene)])
    assert packed.shape == separate.shape
    assert torch.allclose(packed, separate, atol=1e-4), (packed - separate).abs().max()


def _serving_logits(vlm, image_embeds, segment):
    """Logits that predict each answer token and the EOS, from the `[image] + [prompt] + [answer]` row alone."""
    prefix = vlm.prefix(image_embeds, list(segment.prompt_ids + segment.answer_ids))
    logits = vlm.language_model(inputs_embeds=prefix[None]).logits[0]
    first = image_embeds.shape[0] + len(segment.prompt_ids) - 1
    return logits[first:first + len(segment.answer_ids) + 1]


def test_targets_are_answers_and_eos_only():
    vlm = build_demo_vlm(TINY)
    scene = next(generate_scenes(0, 1))
    batch = pack(vlm, [scene])
    expected = [t for s in scene_segments(vlm, scene) for t in s.answer_ids + (vlm.eos_token_id,)]
    assert batch.target_ids.tolist() == expected


def test_training_is_reproducible_from_the_seed(trained):
    vlm, stats = trained
    again, _ = train_demo(TINY, progress=False)
    for a, b in zip(vlm.language_model.state_dict().values(), again.language_model.state_dict().values()):
        assert torch.equal(a, b)
    assert stats["steps_done"] == TINY.steps and not stats["schedule_followed_clock"]


def test_refining_a_saved_first_schedule_gives_the_model_a_run_from_scratch_gives(trained, tmp_path):
    refined = replace(TINY, refine_steps=2)
    from_scratch, stats = train_demo(refined, progress=False)
    save_demo(trained[0], trained[1], tmp_path, with_router=False)
    resumed, resumed_stats = train_demo(refined, progress=False, resume_from=tmp_path)
    assert stats["refine_steps_done"] == resumed_stats["refine_steps_done"] == 2
    for a, b in zip(from_scratch.language_model.parameters(), resumed.language_model.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(resumed.vision.parameters(), trained[0].vision.parameters()))


def test_resuming_refuses_a_model_of_another_recipe(trained, tmp_path):
    save_demo(trained[0], trained[1], tmp_path, with_router=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train_demo(replace(TINY, refine_steps=1, learning_rate=1e-3), progress=False, resume_from=tmp_path)


def test_saved_model_loads_and_answers(trained, tmp_path):
    vlm, stats = trained
    checkpoint_dir = save_demo(vlm, stats, tmp_path)
    assert checkpoint_dir == tmp_path / CHECKPOINT_DIR and is_complete(tmp_path)
    assert (checkpoint_dir / "task_classifier.pt").is_file()
    assert json.loads((tmp_path / STATS_FILE).read_text())["steps_done"] == TINY.steps
    loaded = load_vlm(checkpoint_dir)
    for name, tensor in vlm.vision.vit.state_dict().items():
        assert torch.equal(tensor, loaded.vision.vit.state_dict()[name])
    report = evaluate_held_out(loaded, 2, batch_size=4)
    assert report.scenes == 2 and 0.0 <= report.vqa_accuracy <= 1.0 and report.vqa_questions > 0
    assert report.decoder_precision == "fp32" and report.identical_to_fp32 is None
    int8 = evaluate_held_out(loaded, 2, batch_size=4, precision="int8")      # what decoder_precision=int8 serves
    assert int8.decoder_precision == "int8" and 0.0 <= int8.identical_to_fp32 <= 1.0
    assert int8.vqa_questions == report.vqa_questions


def test_demo_subcommands_are_registered_with_kebab_case_flags_and_help():
    parser = argparse.ArgumentParser(prog="vlm")
    add_demo_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo-train", "--output", "out", "--minutes", "2", "--seed", "3", "--force"])
    assert (args.output, args.minutes, args.seed, args.force) == ("out", 2.0, 3, True) and callable(args.func)
    args = parser.parse_args(["demo-eval", "out", "--scenes", "5", "--json", "--batch-size", "8",
                              "--decoder-precision", "int8"])
    assert (args.directory, args.scenes, args.json, args.batch_size, args.decoder_precision) == \
        ("out", 5, True, 8, "int8")
    for choice in parser._subparsers._group_actions[0].choices.values():
        for action in choice._actions:
            assert action.help, action.dest
            assert all("_" not in option for option in action.option_strings)


def test_half_precision_folder_loads_the_rounded_weights_after_a_move(trained, tmp_path):
    from minivlm.model.factory import write_notebook_folder
    vlm, _ = trained
    write_notebook_folder(vlm, tmp_path / "a", with_router=False, half=True, relative=True)
    (tmp_path / "a").rename(tmp_path / "b")             # base folders are recorded relative to the checkpoint
    loaded = load_vlm(tmp_path / "b" / CHECKPOINT_DIR)
    for mine, theirs in ((vlm.vision.vit, loaded.vision.vit), (vlm.language_model, loaded.language_model),
                         (vlm.vision.projector, loaded.vision.projector)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert b.dtype == torch.float32 and torch.equal(a.half().float(), b), name
