"""`vlm`: one entry point with subcommands (export, serve, ask, route, and the tools of each area)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vlm_client.cli import add_client_subcommands


def add_export_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="turn a notebook checkpoint folder into a Triton model repository with verified ONNX",
        description="Export the notebook's mini-vlm-routing/ folder: ViT + projector and the router to ONNX "
                    "(each checked against PyTorch at batch sizes 1 and 4), the language model and tokenizers "
                    "for the generator, all in the Triton repository layout.")
    parser.add_argument("checkpoint_dir", type=Path, metavar="CHECKPOINT_DIR",
                        help="the notebook's folder with vlm_with_tags.pt, task_classifier.pt, tokenizer/, "
                             "image_processor/")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="REPO",
                        help="model repository folder to write (replaced if this command built it before)")
    parser.add_argument("--vision-model", metavar="NAME_OR_DIR",
                        help="vision base model: hub name or local folder (default: the checkpoint's "
                             "config vision_model_name)")
    parser.add_argument("--language-model", metavar="NAME_OR_DIR",
                        help="language model config: hub name or local folder (default: the checkpoint's "
                             "config lm_model_name); its weights come from the checkpoint")
    parser.add_argument("--router", default="lstm", metavar="lstm|DIR",
                        help="'lstm' for the notebook's task_classifier.pt (default), or a MiniLM router "
                             "folder written by `vlm router-train`")
    parser.add_argument("--onnx-backend", choices=("python", "onnxruntime"), default="python",
                        help="how ONNX graphs run: 'python' = ONNX Runtime inside python-backend models (the "
                             "pip-installed server, no onnxruntime backend); 'onnxruntime' = Triton's native "
                             "backend (the NGC image)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="instance kind of the router, vision encoder and generator_engine (KIND_CPU/KIND_GPU)")
    parser.add_argument("--decoder-precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="generator_engine's decoder weights: fp32 (default) gives the PyTorch reference's "
                             "greedy tokens exactly; int8 about 1.9x the throughput on CPU, bf16 about 1.6x at 8 "
                             "clients, each with an accuracy cost (docs/benchmarks.md; check yours with "
                             "`vlm demo-eval --decoder-precision`)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .repository import BuildOptions, build_repository

    report = build_repository(BuildOptions(
        checkpoint_dir=args.checkpoint_dir, output=args.output, vision_model=args.vision_model,
        language_model=args.language_model, router=args.router, onnx_backend=args.onnx_backend,
        device=args.device, decoder_precision=args.decoder_precision))
    print(f"model repository written to {report.output} ({report.onnx_backend} ONNX backend, {report.device}, "
          f"{args.decoder_precision} decoder)")
    for graph, diffs in report.max_abs_diff.items():
        shown = ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items())
        print(f"  {graph}: max |ONNX - PyTorch| {shown}")
    return 0


def add_serve_command(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run tritonserver on a model repository until Ctrl-C",
                                   description="Start the real tritonserver (from the nvidia-pytriton wheel), "
                                               "wait until every model is ready, stop cleanly on Ctrl-C/SIGTERM.")
    parser.add_argument("--model-repository", type=Path, required=True, metavar="REPO",
                        help="repository written by `vlm export`")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default loopback; expose deliberately)")
    parser.add_argument("--startup-timeout-s", type=float, default=300.0,
                        help="seconds to wait for every model to load and warm up")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from .triton_server import ServerOptions, TritonServer

    server = TritonServer(ServerOptions(
        model_repository=args.model_repository.resolve(), grpc_port=args.grpc_port, http_port=args.http_port,
        metrics_port=args.metrics_port, host=args.host, startup_timeout_s=args.startup_timeout_s))
    print(f"admin key for restricted endpoints (model control, shm, trace, logging): {server.admin_key}")
    server.serve_forever()
    return 0


_AREA_COMMANDS = (("minivlm.quickstart", "add_demo_command"), ("minivlm.router.cli", "add_router_subcommands"),
                  ("minivlm.demo.cli", "add_demo_subcommands"), ("minivlm.bench.cli", "add_bench_subcommands"))


def _area_subcommands(subparsers) -> None:
    """Areas whose tools live in their own modules register their own subcommands."""
    import importlib

    for module, function in _AREA_COMMANDS:
        getattr(importlib.import_module(module), function)(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm", description="Serve a routed mini vision-language model on Triton.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_export_command(subparsers)
    add_serve_command(subparsers)
    add_client_subcommands(subparsers)
    _area_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
