"""`vlm router-*` subcommands: train and evaluate the task router (`vlm router-export` is the
runtime's, `vlm router-bench` the bench's).

The main `vlm` entry point calls `add_router_subcommands(subparsers)`; each subcommand sets `func(args) -> int`.
`main(argv)` runs the same subcommands standalone: `python -m vlm_tools.router_training.cli router-eval ...`.
Heavy imports happen inside the handlers so `vlm --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from vlm_tools.router_training.data import COMPOUND_HELDOUT_PATH, COMPOUND_TRAIN_PATHS, HELDOUT_PATH, TRAIN_PATHS


def add_router_subcommands(subparsers) -> None:
    for add in (_add_train, _add_eval):
        add(subparsers)


def _add_train(subparsers) -> None:
    train = subparsers.add_parser("router-train", help="train the MiniLM task router into a folder")
    train.add_argument("-o", "--output", type=Path, required=True, help="router folder to write")
    train.add_argument("--data", type=Path, nargs="+", default=list(TRAIN_PATHS),
                       help="training jsonl files (default: the generated and the hand-written one)")
    train.add_argument("--compound-data", type=Path, nargs="+", default=list(COMPOUND_TRAIN_PATHS),
                       help="multi-label jsonl files for the scores head, with --data's single-task queries")
    train.add_argument("--heldout", type=Path, default=HELDOUT_PATH, help="jsonl evaluated after training")
    train.add_argument("--compound-heldout", type=Path, default=COMPOUND_HELDOUT_PATH,
                       help="multi-label jsonl evaluated after training")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--heads-only", action="store_true",
                       help="write only the heads and name the packaged encoder (a few KB; how the shipped router "
                            "minivlm/routing/minilm_router/ is made)")
    train.add_argument("--head-steps", type=int, default=600)
    train.add_argument("--calibration-fraction", type=float, default=0.2)
    train.add_argument("--head-hidden", type=int, default=128,
                       help="hidden units of both heads (Linear, GELU, Linear); 0: one Linear layer each")
    train.add_argument("--extra-layers", type=int, nargs="*", default=[2],
                       help="encoder hidden states (0: embeddings, 1-5: after that layer) whose mean and max pools "
                            "the heads read besides the last layer's")
    train.add_argument("--no-spelling", action="store_true",
                       help="no key-word spelling correction before tokenizing (minivlm/routing/spelling.py)")
    train.add_argument("--keep-ruled-out", action="store_true",
                       help="keep the clauses that rule a task out (default: dropped before the encoder, "
                            "minivlm/routing/ruled_out.py)")
    _common(train, _cmd_train)


def _add_eval(subparsers) -> None:
    evaluate = subparsers.add_parser("router-eval", help="evaluate a router (.pt, MiniLM folder or .onnx)")
    evaluate.add_argument("router", type=Path)
    evaluate.add_argument("--data", type=Path, default=HELDOUT_PATH, help="single-task jsonl")
    evaluate.add_argument("--compound", type=Path, default=COMPOUND_HELDOUT_PATH,
                          help="multi-label jsonl for compound detection")
    evaluate.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: beside the router)")
    _common(evaluate, _cmd_eval)


def _common(parser: argparse.ArgumentParser, func) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.set_defaults(func=func)


def _setup(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _emit(args, payload: dict, text: str) -> int:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)
    return 0


def train_config(args, config_type):
    """The TrainConfig the flags ask for. The flags' defaults repeat TrainConfig's (so `--help` shows them
    without importing torch); a test checks that the plain command trains with TrainConfig()."""
    return config_type(seed=args.seed, head_steps=args.head_steps, calibration_fraction=args.calibration_fraction,
                       spelling=not args.no_spelling, drop_ruled_out=not args.keep_ruled_out,
                       head_hidden=args.head_hidden, extra_layers=tuple(args.extra_layers))


def _cmd_train(args) -> int:
    from vlm_tools.router_training.train import TrainConfig, train_minilm_router

    _setup(args)
    report = train_minilm_router(args.output, train_path=args.data, compound_path=args.compound_data,
                                 config=train_config(args, TrainConfig), progress=not args.json,
                                 heads_only=args.heads_only)
    heldout, compound, text = _evaluate(args.output, args.heldout, args.compound_heldout, None)
    text = (f"trained {report.output_dir} in {report.seconds:.1f} s: T={report.temperature:.3f}, calibration "
            f"ECE {report.ece_before:.4f} -> {report.ece_after:.4f}; scores head: exact task sets "
            f"{report.compound_train_exact:.4f} on {report.n_compound_train} compound-file rows, calibration "
            f"queries flagged compound {report.calibration_flagged_compound:.4f}\n\nheld-out ({args.heldout}, "
            f"{args.compound_heldout}):\n" + text)
    return _emit(args, {"train": asdict(report), "heldout": asdict(heldout), "compound": asdict(compound)}, text)


def _cmd_eval(args) -> int:
    _setup(args)
    report, compound, text = _evaluate(args.router, args.data, args.compound, args.tokenizer)
    return _emit(args, {**asdict(report), "compound": asdict(compound)}, text)


def _evaluate(router: Path, data: Path, compound_data: Path, tokenizer: Path | None):
    """Single-task and compound reports from one loaded router, and their text."""
    from vlm_tools.router_training.data import load_examples, load_multilabel
    from vlm_tools.router_training.evaluate import (
        evaluate_compound,
        evaluate_probs,
        format_compound_report,
        format_report,
        load_predictor,
    )

    predict = load_predictor(router, tokenizer_dir=tokenizer)
    examples, compound_examples = load_examples(data), load_multilabel(compound_data)
    output = predict(examples.texts)
    report = evaluate_probs(output.probs, examples, output.scores)
    compound = evaluate_compound(predict(compound_examples.texts).scores, compound_examples)
    return report, compound, format_report(report) + "\n\n" + format_compound_report(compound)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlm", description="task router tools")
    add_router_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
