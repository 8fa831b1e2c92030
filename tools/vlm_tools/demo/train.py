"""Train the demo VLM (ViT + projector + Llama decoder, all from scratch) on synthetic scenes, on a CPU.

Each step packs 32 scenes with all their questions in the serving format (packing.py), plus training-only
vision heads (auxiliary.py) and distance-aware coordinate targets (coordinates.py). Reproducible from the seed
and thread count: the scenes of step s are scenes [s * batch, (s + 1) * batch) of the training seed and the
schedule follows the step count, unless a busy machine puts the wall clock ahead of it; then the schedule
follows the clock so training still ends annealed within `max_minutes`, and the stats say so. The model is
written in the notebook's checkpoint format, so the normal export path serves it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlamaConfig, ViTConfig

from minivlm.model.factory import build_vlm, train_tokenizer, write_notebook_folder
from minivlm.model.vlm import MiniVLM
from minivlm.processing.images import IMAGE_SIZE, pixel_values
from minivlm.processing.prompts import build_prompt
from vlm_client.protocol import TASKS
from vlm_tools.demo.auxiliary import VisionHeads, VisionTargets, vision_targets
from vlm_tools.demo.config import STATS_FILE, DemoConfig
from vlm_tools.demo.coordinates import CoordinateTargets
from vlm_tools.demo.packing import PackedBatch, pack, scene_texts
from vlm_tools.demo.scenes import generate_scenes
from vlm_tools.demo.vision_init import structured_vision_init

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "mini-vlm-routing"
VISION_SCENES = 10_000_000              # the vision-only steps draw scenes from here on, apart from the rest
REFINE_SCENES = 20_000_000              # the refine schedule's scenes, apart from both
SAVE_RESERVE_S = 15.0                    # of the time budget, kept for writing the model


def demo_tokenizer(config: DemoConfig):
    """A byte-level BPE trained offline on every text the scenes produce, prompts included."""
    corpus, rng = [], np.random.default_rng([config.seed, 10**9])
    for scene in generate_scenes(config.seed, config.tokenizer_scenes, start=10**9):
        corpus += [piece for task, question, answer in scene_texts(scene, rng)
                   for piece in (build_prompt(task, question), answer)]
    return train_tokenizer(corpus, config.vocab_size)


def build_demo_vlm(config: DemoConfig) -> MiniVLM:
    tokenizer = demo_tokenizer(config)
    vision = ViTConfig(image_size=IMAGE_SIZE, patch_size=config.patch_size, hidden_size=config.vision_hidden,
                       num_hidden_layers=config.vision_layers, num_attention_heads=4,
                       intermediate_size=config.vision_hidden * 4, initializer_range=config.init_std)
    eos = tokenizer.eos_token_id
    language = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.language_hidden,
                           intermediate_size=config.language_hidden * 8 // 3,
                           num_hidden_layers=config.language_layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, tie_word_embeddings=True, initializer_range=config.init_std,
                           bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return build_vlm(vision, language, tokenizer, seed=config.seed)


def packed_loss(vlm: MiniVLM, batch: PackedBatch, task_weights: dict, *,
                vision: tuple[VisionHeads, VisionTargets] | None = None,
                coordinates: CoordinateTargets | None = None) -> tuple[torch.Tensor, dict]:
    """Weighted sum of each task's mean token loss (plus the vision heads' loss when given); also returns the
    parts for the progress bar."""
    lm = vlm.language_model
    vit_hidden = vlm.vision.vit(pixel_values=batch.pixel_values).last_hidden_state   # (B, N, vision_dim)
    image_embeds = vlm.vision.projector(vit_hidden)         # = VisionEncoder.forward, ViT features kept
    embeds = torch.cat([image_embeds, lm.get_input_embeddings()(batch.input_ids)], dim=1)   # (B, N + T, D)
    hidden = lm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids, use_cache=False).last_hidden_state
    logits = lm.lm_head(hidden[batch.target_rows, batch.target_columns])           # (K, V)
    targets = coordinates.soft(batch.target_ids) if coordinates else batch.target_ids
    losses = F.cross_entropy(logits, targets, reduction="none")                     # (K,)
    parts = {task: losses[batch.target_tasks == i].mean() for i, task in enumerate(TASKS)}
    total = sum(task_weights[task] * value for task, value in parts.items())
    if vision is not None:
        parts["vision"] = vision[0].loss(vit_hidden, vision[1])
        total = total + task_weights["vision"] * parts["vision"]
    return total, {name: float(value.detach()) for name, value in parts.items()}


def learning_rate(config: DemoConfig, step: int, progress: float) -> float:
    """Linear warm-up over steps, then cosine decay to a tenth over `progress` in [0, 1]."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    return config.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _optimizer(modules: list[torch.nn.Module], config: DemoConfig) -> torch.optim.Optimizer:
    params = [p for m in modules for p in m.parameters()]
    decay = [p for p in params if p.ndim >= 2]          # no weight decay on norms and biases
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.learning_rate)


def train_demo(config: DemoConfig, *, progress: bool = True, snapshots: Path | None = None,
               snapshot_every: int = 0, resume_from: Path | None = None) -> tuple[MiniVLM, dict]:
    """Train from scratch; torch's thread count is restored afterwards. With `snapshots`, the model is also
    written to snapshots/step-N every `snapshot_every` steps, to watch a long run (not annealed there). With
    `resume_from`, a folder that `config`'s first schedule wrote, only the refine schedule runs: the result is
    the one a run from scratch gives, since the refine schedule starts afresh (optimizer, seed, no heads)."""
    previous = torch.get_num_threads()
    config = replace(config, threads=config.threads or _threads())
    torch.set_num_threads(config.threads)
    try:
        if resume_from is not None:
            return _resume(config, Path(resume_from), progress, (snapshots, snapshot_every))
        return _train(config, progress, (snapshots, snapshot_every))
    finally:
        torch.set_num_threads(previous)


def _threads() -> int:
    """Two threads make a step ~1.8x faster on an idle 2-core machine, but when other work holds a core each
    step waits for the descheduled thread and runs several times slower than one thread does."""
    busy = os.getloadavg()[0] >= 1.0
    threads = 1 if busy else min(2, os.cpu_count() or 1)
    log.info("load average %.2f: training with %d thread(s)", os.getloadavg()[0], threads)
    return threads


def _train(config: DemoConfig, show_progress: bool, snapshots: tuple[Path | None, int]) -> tuple[MiniVLM, dict]:
    started = time.monotonic()
    torch.manual_seed(config.seed)
    vlm = build_demo_vlm(config)
    if config.structured_init:
        structured_vision_init(vlm.vision.vit)
    head = VisionHeads(config.vision_hidden) if config.task_weights.get("vision") else None
    coordinates = CoordinateTargets(vlm.tokenizer, config.coordinate_sigma) if config.coordinate_sigma else None
    vlm.vision.train()
    vlm.language_model.train()
    optimizer = _optimizer([vlm.vision, vlm.language_model] + ([head] if head else []), config)
    if head and config.vision_steps:
        _pretrain_vision(vlm, head, config, show_progress)
    budget_s = config.max_minutes * 60 - (time.monotonic() - started) - SAVE_RESERVE_S
    step, losses, timed = _loop(vlm, (head, coordinates), optimizer, config, budget_s, show_progress, snapshots)
    stats = {"steps_done": step, "schedule_followed_clock": timed, "seconds": time.monotonic() - started,
             "final_losses": losses, "parameters": _parameter_counts(vlm), "config": asdict(config)}
    if config.refine_steps and step == config.steps:
        stats = _refine(vlm, config, stats, show_progress, snapshots)
    vlm.vision.eval()
    vlm.language_model.eval()
    return vlm, stats


# Settings that only shape the run, not the model a schedule produces
_RUN_SETTINGS = ("stop_after", "max_minutes", "threads", "refine_steps", "refine_learning_rate",
                 "refine_position_questions")


def _resume(config: DemoConfig, folder: Path, show_progress: bool, snapshots) -> tuple[MiniVLM, dict]:
    from minivlm.model.checkpoint import load_vlm
    stats = json.loads((folder / STATS_FILE).read_text())
    trained = {k: v for k, v in stats["config"].items() if k not in _RUN_SETTINGS}
    wanted = {k: v for k, v in asdict(config).items() if k not in _RUN_SETTINGS}
    different = sorted(k for k in wanted if trained.get(k) != wanted[k])
    if different or stats["steps_done"] != config.steps or stats.get("refine_steps_done"):
        raise ValueError(f"{folder} is not this recipe's first schedule (different: "
                         f"{different or 'steps done, or already refined'})")
    vlm = load_vlm(checkpoint_directory(folder))
    stats = {**stats, "config": asdict(config), "resumed_from": str(folder),
             "first_schedule_threads": stats["config"]["threads"]}
    stats = _refine(vlm, config, stats, show_progress, snapshots)
    vlm.vision.eval()
    vlm.language_model.eval()
    return vlm, stats


def _refine(vlm: MiniVLM, config: DemoConfig, stats: dict, show_progress: bool, snapshots) -> dict:
    """The second schedule: warm-up and cosine decay at `refine_learning_rate` over `refine_steps`."""
    started = time.monotonic()
    torch.manual_seed(config.seed + 1)
    vlm.vision.train()
    vlm.language_model.train()
    schedule = replace(config, steps=config.refine_steps, learning_rate=config.refine_learning_rate)
    optimizer = _optimizer([vlm.vision, vlm.language_model], schedule)
    coordinates = CoordinateTargets(vlm.tokenizer, config.coordinate_sigma) if config.coordinate_sigma else None
    losses, (folder, every) = {}, snapshots
    bar = tqdm(range(config.refine_steps), desc="demo-train refine", disable=not show_progress)
    for step in bar:
        losses = _train_step(vlm, (None, coordinates), optimizer, schedule, step, step / config.refine_steps,
                             scenes_from=REFINE_SCENES, extra_position=config.refine_position_questions)
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
        if folder and every and (step + 1) % every == 0 and step + 1 < config.refine_steps:
            _snapshot(vlm, Path(folder) / f"refine-{step + 1}", {**stats, "refine_steps_done": step + 1})
    seconds = time.monotonic() - started
    return {**stats, "refine_steps_done": config.refine_steps, "refine_seconds": seconds,
            "seconds": stats["seconds"] + seconds, "final_losses": losses}


def _pretrain_vision(vlm: MiniVLM, head: VisionHeads, config: DemoConfig, show_progress: bool) -> None:
    """The ViT and its heads alone first (a step costs a fifth of a full one), so the decoder starts out reading
    features that already name colours and places rather than noise."""
    vit = vlm.vision.vit
    optimizer = _optimizer([vit, head], config)
    schedule = replace(config, steps=config.vision_steps)
    for step in tqdm(range(config.vision_steps), desc="demo-train vision", disable=not show_progress):
        scenes = list(generate_scenes(config.seed, config.batch_size, start=VISION_SCENES + step * config.batch_size))
        pixels = torch.from_numpy(np.stack([pixel_values(scene.image) for scene in scenes]))
        loss = head.loss(vit(pixel_values=pixels).last_hidden_state, vision_targets(scenes, config.patch_size))
        _update(optimizer, loss, learning_rate(schedule, step, step / config.vision_steps), config.max_grad_norm)


def _loop(vlm, helpers, optimizer, config: DemoConfig, budget_s: float, show_progress: bool, snapshots):
    """The schedule follows the step count, unless the wall clock runs ahead of it on a busy machine: then
    it follows the clock, so training always ends annealed within the budget (and says it was timed)."""
    started, step, losses, timed = time.monotonic(), 0, {}, False
    last = config.stop_after or config.steps
    with tqdm(total=last, desc="demo-train", disable=not show_progress) as bar:
        while step < last:
            clock = (time.monotonic() - started) / budget_s
            if clock >= 1.0:
                log.warning("stopped at step %d of %d: the %.1f-minute budget ran out",
                            step, config.steps, config.max_minutes)
                break
            ahead = clock > (step + 1) / config.steps      # a step behind the clock: let the clock lead
            timed = timed or ahead
            losses = _train_step(vlm, helpers, optimizer, config, step, clock if ahead else step / config.steps)
            step += 1
            bar.update()
            folder, every = snapshots
            if folder and every and step % every == 0 and step < config.steps:
                _snapshot(vlm, Path(folder) / f"step-{step}", {"steps_done": step, "config": asdict(config)})
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
    return step, losses, timed


def _snapshot(vlm: MiniVLM, folder: Path, stats: dict) -> None:
    vlm.vision.eval()
    vlm.language_model.eval()
    save_demo(vlm, stats, folder, with_router=False)
    vlm.vision.train()
    vlm.language_model.train()


def _train_step(vlm: MiniVLM, helpers: tuple[VisionHeads | None, CoordinateTargets | None],
                optimizer: torch.optim.Optimizer, config: DemoConfig, step: int, progress: float, *,
                scenes_from: int = 0, extra_position: int = 0) -> dict:
    """One step of a schedule whose scenes start at index `scenes_from` of the training seed."""
    scenes = list(generate_scenes(config.seed, config.batch_size, start=scenes_from + step * config.batch_size))
    head, coordinates = helpers
    vision = (head, vision_targets(scenes, config.patch_size)) if head else None
    # the first schedule's key has no offset (its model was trained with it); others name theirs
    restyle_rng = np.random.default_rng([config.seed, scenes_from, step] if scenes_from else [config.seed, step])
    loss, per_task = packed_loss(vlm, pack(vlm, scenes, restyle_rng, extra_position), config.task_weights,
                                 vision=vision, coordinates=coordinates)
    _update(optimizer, loss, learning_rate(config, step, progress), config.max_grad_norm)
    return {"loss": float(loss.detach()), **per_task}


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float, max_grad_norm: float) -> None:
    """One optimizer step at `lr`, gradients clipped to `max_grad_norm`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()


def _parameter_counts(vlm: MiniVLM) -> dict:
    return {"vision": sum(p.numel() for p in vlm.vision.parameters()),
            "language_model": sum(p.numel() for p in vlm.language_model.parameters())}


def is_complete(output: str | Path) -> bool:
    return (Path(output) / STATS_FILE).is_file() and (Path(output) / CHECKPOINT_DIR / "vlm_with_tags.pt").is_file()


def save_demo(vlm: MiniVLM, stats: dict, output: str | Path, *, with_router: bool = True) -> Path:
    """Notebook-format folder first, stats last (the completion marker)."""
    output = Path(output).resolve()
    (output / STATS_FILE).unlink(missing_ok=True)
    checkpoint_dir = write_notebook_folder(vlm, output, with_router=with_router)
    (output / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return checkpoint_dir


def checkpoint_directory(path: str | Path) -> Path:
    """Accept either the demo-train output folder or its mini-vlm-routing/ folder."""
    path = Path(path)
    return path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
