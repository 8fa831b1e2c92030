"""`vlm demo`: the main job end to end on the offline demo model.

Build (or reuse) the demo VLM and the MiniLM router, export a model repository, start tritonserver, ask
natural queries of every kind through the client SDK, print the answers, draw the detections, stop the
server (or keep it serving until Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import signal
import textwrap
import threading
from pathlib import Path

from PIL import Image, ImageDraw

from vlm_client.cli import format_answer

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("artifacts/demo")
DEMO_SCENE = (2026, 7)      # (seed, index) of the scene the demo asks about: not a training scene


def add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the main job: demo model -> Triton -> real answers",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where the demo model, router, repository and outputs live (default %(default)s)")
    parser.add_argument("--keep-serving", action="store_true",
                        help="after the demo queries, keep the server up for your own requests until Ctrl-C")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="metrics port (default 8002)")
    parser.add_argument("--train-minutes", type=float, default=12.0,
                        help="wall-clock cap for training the demo model the first time (default 12)")
    parser.set_defaults(func=run_demo)


def ensure_model(workdir: Path, minutes: float) -> Path:
    from dataclasses import replace

    from vlm_tools.demo.config import DemoConfig
    from vlm_tools.demo.train import checkpoint_directory, is_complete, save_demo, train_demo

    model_dir = workdir / "model"
    if is_complete(model_dir):
        print(f"[1/5] demo model: reusing {model_dir}")
    else:
        print(f"[1/5] demo model: training (at most {minutes:.0f} minutes, once; cached in {model_dir})")
        vlm, stats = train_demo(replace(DemoConfig(), max_minutes=minutes))
        save_demo(vlm, stats, model_dir)
    return checkpoint_directory(model_dir)


def ensure_router() -> Path:
    from minivlm.routing.minilm import SHIPPED_ROUTER

    print(f"[2/5] router: the MiniLM router shipped in {SHIPPED_ROUTER.relative_to(SHIPPED_ROUTER.parents[2])}")
    return SHIPPED_ROUTER


def ensure_repository(checkpoint_dir: Path, router_dir: Path, workdir: Path) -> Path:
    from minivlm.export.repository import MANIFEST, BuildOptions, build_repository, built_from_this_template

    repo = workdir / "repository"
    newest_input = max(p.stat().st_mtime for p in (checkpoint_dir / "vlm_with_tags.pt", router_dir / "router.json"))
    built, current = (repo / MANIFEST).is_file(), built_from_this_template(repo)
    if current and (repo / MANIFEST).stat().st_mtime > newest_input:
        print(f"[3/5] model repository: reusing {repo}")
        return repo
    why = " (built by another version of this project)" if built and not current else ""
    print(f"[3/5] model repository: exporting to {repo}{why}")
    build_repository(BuildOptions(checkpoint_dir=checkpoint_dir, output=repo, router=str(router_dir)))
    return repo


def demo_queries(scene) -> list[str]:
    first = scene.objects[0]
    return ["Describe this picture.",
            "Find all the objects and give me their boxes.",
            f"What colour is the {first.shape}?",
            f"Is there a {first.colour} {first.shape}?",
            "How many shapes are there?",
            "describe the picture and find all the objects"]


def draw_detections(image: Image.Image, objects, path: Path) -> None:
    canvas = image.convert("RGB").resize((448, 448))
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        x, y, w, h = (v * 448 for v in obj.bbox)
        draw.rectangle([x, y, x + w, y + h], outline=(255, 0, 255), width=3)
        draw.text((x + 3, y + 3), obj.label, fill=(255, 0, 255))
    canvas.save(path)


def ask_all(client, image_path: Path, queries: list[str]) -> list:
    answers = []
    for query in queries:
        answer = client.ask(image_path, query, temperature=0.0)    # greedy: every run prints the same answers
        answers.append(answer)
        print(f"\n> {query}\n" + textwrap.indent(format_answer(answer), "  "))   # as `vlm ask` prints it
    return answers


def run_demo(args: argparse.Namespace) -> int:
    from minivlm.server.process import ServerOptions, TritonServer
    from vlm_client import VLMClient
    from vlm_tools.demo.scenes import make_scene

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    repo = ensure_repository(ensure_model(workdir, args.train_minutes), ensure_router(), workdir)
    scene = make_scene(*DEMO_SCENE)
    image_path = workdir / "scene.png"
    scene.image.save(image_path)
    print(f"[4/5] starting tritonserver on {repo} (grpc {args.grpc_port}, http {args.http_port})")
    options = ServerOptions(model_repository=repo, grpc_port=args.grpc_port, http_port=args.http_port,
                            metrics_port=args.metrics_port, startup_timeout_s=600)
    with TritonServer(options) as server, VLMClient(server.grpc_url) as client:
        print(f"[5/5] asking about {image_path} (truth: {scene.caption})")
        answers = ask_all(client, image_path, demo_queries(scene))
        detections = next(a for a in answers if a.task == "od")
        draw_detections(scene.image, detections.objects, workdir / "detections.png")
        print(f"\ndetections drawn to {workdir / 'detections.png'}")
        if args.keep_serving:
            _serve_until_signal(server, image_path)
    print("server stopped")
    return 0


def _serve_until_signal(server, image_path: Path) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"\nserving on grpc {server.grpc_url}, http {server.http_url}; try:\n"
          f"  .venv/bin/vlm ask -u {server.grpc_url} {image_path} \"what colour is the square?\"\n"
          f"admin key: {server.admin_key}\nCtrl-C stops the server.")
    while not stop.wait(1.0):
        if server.process.poll() is not None:
            raise RuntimeError(f"tritonserver exited; log tail:\n{server.log_tail()}")
