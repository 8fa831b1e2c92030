"""`vlm demo-train` and `vlm demo-eval`: registered on the main entry point's subparsers."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from vlm_tools.demo.config import EVAL_SEED, DemoConfig

DEFAULT_MINUTES = DemoConfig.max_minutes


def add_demo_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Each subcommand sets `func(args) -> exit code`."""
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_ship(subparsers)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-train", help="train the demo VLM from scratch on synthetic scenes (CPU; the shipped recipe takes ~2 h)",
        description="Train a small ViT + projector + Llama VLM from scratch on synthetic scenes and write it "
                    "in the notebook's checkpoint format (DIR/mini-vlm-routing/ plus base model folders).")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write the model into")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="wall-clock budget in minutes of the first schedule, tokenizer and saving included; on "
                             "a busy machine that schedule is shortened to fit it (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the scenes and the weights (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=DemoConfig.steps,
                        help="optimizer steps of 32 scenes each (default: %(default)s)")
    parser.add_argument("--refine-steps", type=int, default=DemoConfig.refine_steps, metavar="STEPS",
                        help="a second, shorter schedule after the first (lower rate, extra position questions) "
                             "(default: %(default)s)")
    parser.add_argument("--resume-from", metavar="DIR",
                        help="a complete model this recipe's first schedule wrote: run only the refine schedule on "
                             "it (the same model a run from scratch gives, without the first schedule's hours)")
    parser.add_argument("--stop-after", type=int, default=0, metavar="STEPS",
                        help="stop after STEPS steps of the --steps schedule (default: run all of it)")
    parser.add_argument("--threads", type=int, default=DemoConfig.threads,
                        help="torch threads; 0 picks 2 on an idle machine and 1 on a busy one, where two threads "
                             "stall each other (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="retrain even if DIR already holds a complete model")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="STEPS",
                        help="also write the model to DIR/snapshots/step-N every STEPS steps (default: never)")
    parser.add_argument("--no-router", action="store_true",
                        help="do not write the LSTM router checkpoint (task_classifier.pt)")
    parser.set_defaults(func=_train_command)


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-eval", help="evaluate a demo model on held-out synthetic scenes",
        description="Caption object accuracy, VQA exact match, OD valid-JSON rate, label F1 and mAP@0.5, "
                    "decoded greedily through the serving path.")
    parser.add_argument("directory", metavar="DIR", help="folder written by demo-train (or its mini-vlm-routing/)")
    parser.add_argument("--scenes", type=int, default=200, help="held-out scenes to evaluate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED,
                        help="seed of the held-out scenes; keep it apart from the training seed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="requests decoded together (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--decoder-precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="the decoder's weight format, as generator_engine's decoder_precision parameter: "
                             "measures the accuracy cost of int8 / bf16 on a trained model (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_eval_command)


def _add_ship(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-ship", help="make a demo-train output the shipped demo model (fp16, checksums, eval table)",
        description="Copy a demo-train output folder into tools/vlm_tools/demo/trained/ with fp16 weights, "
                    "evaluate the copy on held-out scenes and write its README (command, training time, eval "
                    "table, SHA-256 per file).")
    parser.add_argument("directory", metavar="DIR", help="folder written by demo-train")
    parser.add_argument("--scenes", type=int, default=500, help="held-out scenes to evaluate (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.set_defaults(func=_ship_command)


def _ship_command(args: argparse.Namespace) -> int:
    import torch

    from minivlm.model.checkpoint import load_vlm
    from vlm_tools.demo.evaluate import evaluate_held_out
    from vlm_tools.demo.shipped import SHIPPED_DEMO_MODEL, ship, write_readme
    from vlm_tools.demo.train import checkpoint_directory
    torch.set_num_threads(args.threads)
    ship(Path(args.directory))
    report = evaluate_held_out(load_vlm(checkpoint_directory(SHIPPED_DEMO_MODEL)), args.scenes)
    table = format_report(report.to_dict())
    write_readme(report.to_dict(), table)
    print(table)
    misses = report.misses()
    print("targets: all met" if not misses else "targets missed: " + "; ".join(misses))
    print(f"shipped to {SHIPPED_DEMO_MODEL}")
    return 0


def _train_command(args: argparse.Namespace) -> int:
    from vlm_tools.demo.config import STATS_FILE
    from vlm_tools.demo.train import is_complete, save_demo, train_demo
    if is_complete(args.output) and not args.force:
        print(f"{args.output} already holds a complete demo model ({STATS_FILE}); use --force to retrain")
        return 0
    config = replace(DemoConfig(), seed=args.seed, steps=args.steps, stop_after=args.stop_after,
                     max_minutes=args.minutes, threads=args.threads, refine_steps=args.refine_steps)
    if args.resume_from and not config.refine_steps:
        raise SystemExit("--resume-from runs the refine schedule: give --refine-steps")
    vlm, stats = train_demo(config, snapshots=Path(args.output) / "snapshots", snapshot_every=args.snapshot_every,
                            resume_from=Path(args.resume_from) if args.resume_from else None)
    checkpoint_dir = save_demo(vlm, stats, args.output, with_router=not args.no_router)
    shortened = " (schedule shortened to fit --minutes)" if stats["schedule_followed_clock"] else ""
    print(f"trained {stats['steps_done']} steps in {stats['seconds']:.0f} s{shortened}; "
          f"losses {stats['final_losses']}")
    print(f"checkpoint: {checkpoint_dir}")
    return 0


def _eval_command(args: argparse.Namespace) -> int:
    import torch

    from minivlm.model.checkpoint import load_vlm
    from vlm_tools.demo.evaluate import evaluate_held_out
    from vlm_tools.demo.train import checkpoint_directory
    torch.set_num_threads(args.threads)
    vlm = load_vlm(checkpoint_directory(args.directory))
    report = evaluate_held_out(vlm, args.scenes, seed=args.seed, batch_size=args.batch_size,
                               precision=args.decoder_precision)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report.to_dict()))
        misses = report.misses()
        print("targets: all met" if not misses else "targets missed: " + "; ".join(misses))
    return 0


def format_report(report: dict) -> str:
    lines = [f"held-out scenes        {report['scenes']}  (decoder {report['decoder_precision']})",
             f"caption objects right  {report['caption_objects_accuracy']:.1%}  "
             f"(object F1 {report['caption_object_f1']:.3f}, exact caption {report['caption_exact_match']:.1%})",
             f"VQA exact match        {report['vqa_accuracy']:.1%}  over {report['vqa_questions']} questions",
             *[f"  {kind:<20} {value:.1%}" for kind, value in report["vqa_by_kind"].items()],
             f"  restyled questions   {report['vqa_restyled_accuracy']:.1%}  (lower case, no \"?\", other spelling)",
             f"OD valid JSON          {report['od_valid_json_rate']:.1%}",
             f"OD label F1            {report['od_label_f1']:.3f}",
             f"OD mAP@0.5             {report['od_map50']:.3f}",
             f"evaluated in           {report['seconds']:.1f} s"]
    if report.get("identical_to_fp32") is not None:
        lines.insert(1, f"answers equal to fp32  {report['identical_to_fp32']:.1%}  (every task, same requests)")
    return "\n".join(lines)
