"""`vlm`: one entry point. The runtime's commands (export, router-export, vision-export, serve) are here, the
client's (ask, route) in `vlm_client.cli`; other installed packages add theirs through the `vlm.commands` entry
point group (the tools: demo, training, benchmarks), so the runtime never imports them.

Every module that registers commands imports only argparse-level things; each command imports what it needs
when it runs, so `vlm --help` and `vlm ask` start in a fraction of a second (torch alone takes seconds).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from minivlm.serving.config import DECODER_PRECISION_CHOICES
from vlm_client.cli import add_client_subcommands

COMMANDS_GROUP = "vlm.commands"     # entry points: callables taking argparse subparsers


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
    parser.add_argument("--router", default="minilm", metavar="minilm|notebook|DIR",
                        help="'minilm': the MiniLM router shipped with the project (default; 100%% on the "
                             "held-out set); 'notebook': the checkpoint's task_classifier.pt; or a MiniLM router "
                             "folder written by `vlm router-train`")
    parser.add_argument("--onnx-backend", choices=("python", "onnxruntime"), default="python",
                        help="how ONNX graphs run: 'python' = ONNX Runtime inside python-backend models (the "
                             "pip-installed server, no onnxruntime backend); 'onnxruntime' = Triton's native "
                             "backend (the NGC image)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="instance kind of the router, vision encoder and generator_engine (KIND_CPU/KIND_GPU)")
    parser.add_argument("--decoder-precision", choices=DECODER_PRECISION_CHOICES, default="auto",
                        help="generator_engine's decoder weights: auto (default) = fp32 on the CPU, which gives "
                             "the PyTorch reference's greedy tokens exactly, and bf16 on a GPU; int8 about 1.9x "
                             "the throughput on CPU, bf16 about 1.6x at 8 "
                             "clients, each with an accuracy cost (docs/benchmarks.md; check yours with "
                             "`vlm demo-eval --decoder-precision`)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from minivlm.export.repository import BuildOptions, ExportStepError, build_repository

    try:
        report = build_repository(BuildOptions(
            checkpoint_dir=args.checkpoint_dir, output=args.output, vision_model=args.vision_model,
            language_model=args.language_model, router=args.router, onnx_backend=args.onnx_backend,
            device=args.device, decoder_precision=args.decoder_precision))
    except (ExportStepError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model repository written to {report.output} ({report.onnx_backend} ONNX backend, {report.device}, "
          f"{args.decoder_precision} decoder)")
    for graph, diffs in report.max_abs_diff.items():
        shown = ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items())
        print(f"  {graph}: max |ONNX - PyTorch| {shown}")
    return 0


def default_admin_key_file() -> Path:
    """Where `vlm serve` keeps its admin key unless told: the user's config folder."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "vlm" / "admin-key"


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
    parser.add_argument("--grpc-tls-cert", type=Path, metavar="PEM",
                        help="serve gRPC over TLS with this certificate (needs --grpc-tls-key)")
    parser.add_argument("--grpc-tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    parser.add_argument("--grpc-tls-client-ca", type=Path, metavar="PEM",
                        help="mutual TLS: serve only clients whose certificate this CA signed")
    parser.add_argument("--no-self-heal", dest="self_heal", action="store_false",
                        help="do not reload a model whose python process died (by default the server runs with "
                             "explicit model control and a watchdog reloads such a model; readiness is false "
                             "meanwhile)")
    parser.add_argument("--trace-file", type=Path, metavar="PATH",
                        help="where Triton's trace API writes its traces (PATH.0, PATH.1, ...); tracing stays off "
                             "until turned on with the admin key (docs/operations.md, \"Tracing a request\")")
    parser.add_argument("--admin-key-file", type=Path, default=default_admin_key_file(), metavar="PATH",
                        help="the admin key for the restricted endpoints (model control, shared memory, statistics, "
                             "trace, logging): read from PATH, or a new random one written there with mode 0600 "
                             "(default %(default)s). The key is never printed nor on a command line")
    parser.add_argument("--max-restarts", type=int, default=5, metavar="N",
                        help="restart a tritonserver that dies at most N times within 10 minutes, with backoff "
                             "from 1 s to 30 s (default 5; 0: exit instead)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from minivlm.server.process import GrpcTls, ServerOptions, TritonServer
    from minivlm.server.supervisor import RestartPolicy

    if bool(args.grpc_tls_cert) != bool(args.grpc_tls_key) or (args.grpc_tls_client_ca and not args.grpc_tls_cert):
        print("error: --grpc-tls-cert and --grpc-tls-key go together (and --grpc-tls-client-ca needs them)",
              file=sys.stderr)
        return 2
    tls = GrpcTls(server_cert=args.grpc_tls_cert, server_key=args.grpc_tls_key,
                  client_ca=args.grpc_tls_client_ca) if args.grpc_tls_cert else None
    server = TritonServer(ServerOptions(
        model_repository=args.model_repository.resolve(), grpc_port=args.grpc_port, http_port=args.http_port,
        metrics_port=args.metrics_port, host=args.host, startup_timeout_s=args.startup_timeout_s, grpc_tls=tls,
        self_heal=args.self_heal, trace_file=args.trace_file, admin_key_file=args.admin_key_file))
    print(f"admin key for restricted endpoints (model control, shm, statistics, trace, logging) in "
          f"{args.admin_key_file} (mode 0600): export VLM_ADMIN_KEY=$(cat {args.admin_key_file})")
    server.serve_forever(restart_policy=RestartPolicy(max_restarts=max(0, args.max_restarts)))
    return 0


def add_router_export_command(subparsers) -> None:
    parser = subparsers.add_parser("router-export", help="export a router to ONNX and check it against PyTorch")
    parser.add_argument("router", type=Path, help="a MiniLM router folder or the notebook's task_classifier.pt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--tokenizer", type=Path, help="LSTM only: LM tokenizer folder (default: sibling tokenizer/)")
    parser.add_argument("--temperature", type=float, help="override the saved temperature")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_router_export)


def run_router_export(args: argparse.Namespace) -> int:
    from minivlm.export.router import export_router
    from minivlm.routing.loading import load_router

    report = export_router(load_router(args.router, tokenizer_dir=args.tokenizer, temperature=args.temperature),
                           args.output)
    scores = "" if report.has_scores_head else "; no scores head: task_scores = task_probs"
    return _print_export(args, report, f"wrote {report.path} and {report.tokenizer_dir}{scores}")


def add_vision_export_command(subparsers) -> None:
    parser = subparsers.add_parser("vision-export", help="export a checkpoint's ViT + projector to ONNX and check it",
                                   description="The vision_encoder graph alone (vlm export writes it too).")
    parser.add_argument("checkpoint_dir", type=Path, metavar="CHECKPOINT_DIR", help="the notebook's folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--vision-model", metavar="NAME_OR_DIR", help="vision base model (default: the config's)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_vision_export)


def run_vision_export(args: argparse.Namespace) -> int:
    from minivlm.export.vision_encoder import export_vision_encoder
    from minivlm.model.checkpoint import load_vlm

    vlm = load_vlm(args.checkpoint_dir, vision_model=args.vision_model)
    report = export_vision_encoder(vlm.vision, args.output)
    return _print_export(args, report, f"wrote {report.path} in {report.export_s:.1f} s")


def _print_export(args: argparse.Namespace, report, headline: str) -> int:
    import dataclasses
    import json

    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, default=str))
        return 0
    print(headline)
    for output, diffs in report.output_diffs.items():
        print(f"  {output}: max |ONNX - PyTorch| " + ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items()))
    return 0


def add_plugin_subcommands(subparsers) -> None:
    """Commands of other installed packages (`vlm.commands` entry points); a package declared but absent (the
    GPU image leaves the tools out) adds none."""
    for entry_point in entry_points(group=COMMANDS_GROUP):
        try:
            add = entry_point.load()
        except ModuleNotFoundError:
            continue
        add(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm", description="Serve a routed mini vision-language model on Triton.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_export_command(subparsers)
    add_router_export_command(subparsers)
    add_vision_export_command(subparsers)
    add_serve_command(subparsers)
    add_client_subcommands(subparsers)
    add_plugin_subcommands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
