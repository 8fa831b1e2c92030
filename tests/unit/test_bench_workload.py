"""The benchmark's workload: mixes, rounds, images, EOS suppression, and the notebook-time extrapolation."""
import io

import pytest
import torch
from PIL import Image

from vlm_tools.bench.bench_model import confine_to_tokenizer, suppress_eos
from vlm_tools.bench.inprocess import NotebookRun, RequestTiming, notebook_latencies, step_time_fit
from vlm_tools.bench.workload import TASK_TOKENS, build_workload, parse_mix, task_cycle, whole_cycles


def test_parse_mix_and_interleaved_rounds():
    mix = parse_mix("caption=1, od=1,vqa=2")
    assert mix == {"caption": 1, "od": 1, "vqa": 2}
    assert task_cycle(mix) == ["caption", "od", "vqa", "vqa"]
    assert whole_cycles(5, mix) == 8
    assert whole_cycles(1, mix) == 4


@pytest.mark.parametrize("text, message", [("chat=1", "unknown task"), ("od=x", "non-negative"),
                                           ("od=0", "no task")])
def test_parse_mix_rejects_bad_text(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_workload_items_have_task_limits_tags_and_decodable_images():
    items = build_workload(4, {"caption": 1, "od": 1, "vqa": 1})
    assert [i.task for i in items] == ["caption", "od", "vqa", "caption"]
    assert all(i.max_new_tokens == TASK_TOKENS[i.task] for i in items)
    assert items[2].query.startswith("[VQA] ")
    assert {Image.open(io.BytesIO(i.image)).format for i in items} == {"JPEG", "PNG"}
    assert build_workload(4)[1].image == items[1].image          # deterministic


def test_suppressed_eos_never_wins_greedy_decoding(tiny_vlm):
    import copy
    lm = copy.deepcopy(tiny_vlm.language_model)
    suppress_eos(lm, 0)
    logits = lm(inputs_embeds=torch.randn(8, 5, lm.config.hidden_size)).logits
    assert torch.all(logits[..., 0] == 0)
    assert torch.all(logits.argmax(-1) != 0)


def test_greedy_decoding_confined_to_the_tokenizer_picks_ids_with_text(tiny_vlm):
    import copy
    lm = copy.deepcopy(tiny_vlm.language_model)
    confine_to_tokenizer(lm, 40)
    logits = lm(inputs_embeds=torch.randn(8, 5, lm.config.hidden_size)).logits
    assert torch.all(logits[..., 40:] == 0)
    assert torch.all(logits.argmax(-1) < 40)


def test_step_fit_and_extrapolated_latencies():
    steps = [(100, 1.0), (200, 2.0), (300, 3.0)]          # 0.01 s per position, no intercept
    assert step_time_fit(steps) == pytest.approx((0.0, 0.01))
    run = NotebookRun([RequestTiming(0, "vqa", 100, 3, 3.5, 0.5)], steps)
    assert notebook_latencies(run, [(100, 2)]) == pytest.approx([0.5 + 1.0 + 1.01])
