"""The trained demo model committed with the code (`trained/`): where it is, how it was made, its checksums.

`trained/SHA256SUMS` lists every file of the model folder (`sha256sum` format), `trained/demo_training.json`
the exact settings it was trained with, so `vlm demo --retrain` and `vlm demo-train` rebuild it from its seed.
`vlm demo-ship` writes all of this from a `demo-train` output folder.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from vlm_tools.demo.config import EVAL_SEED, STATS_FILE, DemoConfig

SHIPPED_DEMO_MODEL = Path(__file__).resolve().parent / "trained"
CHECKSUMS = "SHA256SUMS"
README = "README.md"
_NOT_HASHED = (CHECKSUMS, README)          # the description and the list itself


class ShippedModelError(RuntimeError):
    pass


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _NOT_HASHED)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every model file."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in model_files(folder)}


def write_checksums(folder: Path) -> None:
    lines = [f"{digest}  {name}" for name, digest in checksums(folder).items()]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n")


def read_checksums(folder: Path) -> dict[str, str]:
    listed = {}
    for line in (folder / CHECKSUMS).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.strip()] = digest
    return listed


def verify_shipped_model(folder: Path = SHIPPED_DEMO_MODEL) -> None:
    """Every listed file present with its SHA-256, and no unlisted file: raises ShippedModelError naming them."""
    if not (folder / CHECKSUMS).is_file():
        raise ShippedModelError(f"{folder}: no {CHECKSUMS}; is the shipped demo model missing?")
    listed, found = read_checksums(folder), checksums(folder)
    problems = [f"{name}: missing" for name in listed if name not in found]
    problems += [f"{name}: SHA-256 {found[name][:12]}..., listed {digest[:12]}..."
                 for name, digest in listed.items() if name in found and found[name] != digest]
    problems += [f"{name}: not listed" for name in found if name not in listed]
    if problems:
        raise ShippedModelError(f"{folder}: " + "; ".join(problems))


def shipped_recipe(folder: Path = SHIPPED_DEMO_MODEL) -> DemoConfig:
    """The DemoConfig the shipped model was trained with (threads left to the machine)."""
    config = json.loads((folder / STATS_FILE).read_text())["config"]
    config["threads"] = 0
    return DemoConfig(**config)


def ship(source: Path, folder: Path = SHIPPED_DEMO_MODEL) -> None:
    """Copy a demo-train output into `folder` with fp16 weights and relative base paths, then list checksums.

    The README with the command, time and eval table is written by the caller (`vlm demo-ship`)."""
    from minivlm.model.checkpoint import load_vlm
    from minivlm.model.factory import write_notebook_folder
    from vlm_tools.demo.train import checkpoint_directory

    vlm = load_vlm(checkpoint_directory(source))
    staging = folder.with_name(folder.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    write_notebook_folder(vlm, staging, with_router=False, half=True, relative=True)
    stats = json.loads((Path(source) / STATS_FILE).read_text())
    # every setting, also ones added since (a config without refine_steps predates the refine schedule)
    stats["config"] = {**asdict(DemoConfig()), "refine_steps": 0, **stats["config"]}
    if stats["steps_done"] < stats["config"]["steps"]:      # a snapshot: the recipe stops the schedule there
        stats["config"]["stop_after"] = stats["steps_done"]
    (staging / STATS_FILE).write_text(json.dumps(stats, indent=2))
    write_checksums(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def train_command_line(config: dict) -> str:
    """The `vlm demo-train` command that reproduces a recorded training config."""
    stop = f" --stop-after {config['stop_after']}" if config.get("stop_after") else ""
    refine = f" --refine-steps {config.get('refine_steps', 0)}"
    return (f"vlm demo-train --output DIR --seed {config['seed']} --steps {config['steps']}{stop}{refine} "
            f"--minutes {config['max_minutes']:g} --threads {config['threads']}")


def _how_it_was_made(stats: dict) -> str:
    """The command from scratch, and where the refine schedule ran on a saved first schedule, the two steps
    actually taken (the same model: the refine schedule starts afresh)."""
    config = stats["config"]
    lines = [f"    {train_command_line(config)}", "    vlm demo-ship DIR"]
    if stats.get("resumed_from"):
        first = train_command_line({**config, "refine_steps": 0,
                                    "threads": stats.get("first_schedule_threads", config["threads"])})
        lines += ["", "It was made in two steps, the first schedule and then the refine schedule on its output "
                      "(`--resume-from` checks that the saved model is this recipe's first schedule):", "",
                  f"    {first.replace('DIR', 'FIRST')}",
                  f"    {train_command_line(config)} --resume-from FIRST", "",
                  "Another `--threads` can change the last bits of float sums: the same recipe, a model of the "
                  "same quality, not the same bits."]
    return "\n".join(lines)


def write_readme(report: dict, table: str, folder: Path = SHIPPED_DEMO_MODEL) -> None:
    """What the folder is, the command that rebuilds it, how long that took, its scores and its checksums."""
    stats = json.loads((folder / STATS_FILE).read_text())
    config = stats["config"]
    sums = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in read_checksums(folder).items())
    parameters = ", ".join(f"{name} {count:,}" for name, count in stats["parameters"].items())
    clock = " (the schedule followed the clock)" if stats["schedule_followed_clock"] else ""
    refined = (f" then {stats['refine_steps_done']:,} refine steps ({stats['refine_seconds'] / 60:.0f} minutes)"
               if stats.get("refine_steps_done") else "")
    (folder / README).write_text(f"""# The shipped demo model

The model `vlm demo` serves: a ViT (patch {config['patch_size']}, hidden {config['vision_hidden']}, \
{config['vision_layers']} layers) + projector + Llama decoder (hidden {config['language_hidden']}, \
{config['language_layers']} layers) trained from scratch on the synthetic scenes of `tools/vlm_tools/demo/scenes.py`, \
in the notebook's checkpoint format (`mini-vlm-routing/` with base model folders recorded relative to it), \
weights stored in fp16 (served in fp32). Parameters: {parameters}.

## How it was made

{_how_it_was_made(stats)}

Seed {config['seed']}, {stats['steps_done']:,} steps of {config['batch_size']} scenes{refined}, \
{stats['seconds'] / 60:.0f} minutes in all on a 2-core CPU{clock}. \
`vlm demo --retrain` runs the same recipe (`demo_training.json` holds every setting).

## Held-out evaluation

`vlm demo-eval tools/vlm_tools/demo/trained --scenes {report['scenes']}` on scenes never seen in training \
(seed {EVAL_SEED}), greedy, through the serving decode path:

```
{table}
```

## SHA-256 of every file

Checked by `vlm demo` before it serves the model and by `tests/unit/test_shipped_demo_model.py`; \
`{CHECKSUMS}` holds the same list in `sha256sum -c` format.

| file | SHA-256 |
|---|---|
{sums}
""")
