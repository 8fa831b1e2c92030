"""`vlm demo`: the main job end to end on the offline demo model.

Take the trained demo VLM shipped in `trained/` (or retrain it with --retrain) and the MiniLM router, export a
model repository, start tritonserver, ask natural queries of every kind through the client SDK, print each
answer beside the scene's ground truth, draw predicted and true boxes, stop the server (or keep it serving
until Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import signal
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from vlm_client.cli import format_answer
from vlm_client.types import DetectedObject
from vlm_tools.demo.scenes import COLOURS, SHAPES
from vlm_tools.demo.texts import with_article

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("artifacts/demo")
DEMO_SCENE = (2026, 55)     # (seed, index) of the scene the demo asks about: not a training scene; 4 objects


def add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the main job: demo model -> Triton -> real answers",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where the repository, outputs and a retrained model live (default %(default)s)")
    parser.add_argument("--keep-serving", action="store_true",
                        help="after the demo queries, keep the server up for your own requests until Ctrl-C")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="metrics port (default 8002)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the demo model from scratch with the shipped model's recipe instead of using "
                             "the shipped model (about as long as trained/README.md says)")
    parser.set_defaults(func=run_demo)


def ensure_model(workdir: Path, retrain: bool) -> Path:
    from vlm_tools.demo.shipped import SHIPPED_DEMO_MODEL, shipped_recipe, verify_shipped_model
    from vlm_tools.demo.train import checkpoint_directory, save_demo, train_demo

    if not retrain:
        verify_shipped_model()
        print(f"[1/5] demo model: the trained model shipped in {_relative(SHIPPED_DEMO_MODEL)} (SHA-256 checked)")
        return checkpoint_directory(SHIPPED_DEMO_MODEL)
    model_dir = workdir / "model"
    recipe = shipped_recipe()
    steps = f"{recipe.steps} + {recipe.refine_steps}" if recipe.refine_steps else f"{recipe.steps}"
    print(f"[1/5] demo model: retraining from scratch ({steps} steps, seed {recipe.seed}) into {model_dir}")
    vlm, stats = train_demo(recipe)
    save_demo(vlm, stats, model_dir, with_router=False)
    return checkpoint_directory(model_dir)


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def ensure_router() -> Path:
    from minivlm.routing.minilm import SHIPPED_ROUTER

    print(f"[2/5] router: the MiniLM router shipped in {_relative(SHIPPED_ROUTER)}")
    return SHIPPED_ROUTER


def ensure_repository(checkpoint_dir: Path, router_dir: Path, workdir: Path) -> Path:
    """Reuse the repository only when it was built by this project version from these exact files."""
    from minivlm.export.repository import BuildOptions, build_repository, built_from_this_template

    repo, stamp = workdir / "repository", workdir / "repository.source"
    from vlm_tools.demo.shipped import sha256_file

    source = " ".join([str(checkpoint_dir.resolve()), sha256_file(checkpoint_dir / "vlm_with_tags.pt"),
                       sha256_file(router_dir / "router.json")])
    if built_from_this_template(repo) and stamp.is_file() and stamp.read_text() == source:
        print(f"[3/5] model repository: reusing {repo}")
        return repo
    print(f"[3/5] model repository: exporting to {repo}")
    stamp.unlink(missing_ok=True)
    build_repository(BuildOptions(checkpoint_dir=checkpoint_dir, output=repo, router=str(router_dir)))
    stamp.write_text(source)
    return repo


@dataclass(frozen=True)
class DemoQuery:
    query: str
    truth: dict            # task -> the right answer (text, or the true objects for "od")


def demo_queries(scene) -> list[DemoQuery]:
    """Natural queries of every kind, each with its answer worked out from the scene's ground truth."""
    objects = scene.objects
    shapes = [o.shape for o in objects]
    unique = next(o for o in objects if shapes.count(o.shape) == 1)
    present = {(o.colour, o.shape) for o in objects}
    absent = next((c, s) for c in COLOURS for s in SHAPES          # a near miss: shares a colour or a shape
                  if (c, s) not in present and (c == unique.colour or s == unique.shape))
    truth_od = tuple(objects)
    return [DemoQuery("Describe this picture.", {"caption": scene.caption}),
            DemoQuery("Find all the objects and give me their boxes.", {"od": truth_od}),
            DemoQuery(f"what colour is the {unique.shape}?", {"vqa": unique.colour}),
            DemoQuery(f"Is there {with_article(unique.colour)} {unique.shape}?", {"vqa": "yes"}),
            DemoQuery(f"is there {with_article(absent[0])} {absent[1]}", {"vqa": "no"}),
            DemoQuery("How many shapes are there?", {"vqa": str(len(objects))}),
            DemoQuery("describe the picture and find all the objects", {"caption": scene.caption, "od": truth_od})]


def truth_lines(answer, truth: dict) -> list[str]:
    """`truth` lines under an answer, each marked right or wrong (OD: every label found, boxes at IoU >= 0.5)."""
    parts = {part.task: part for part in answer.parts} if answer.parts else {answer.task: answer}
    lines = []
    for task, expected in truth.items():
        part = parts.get(task)
        if task == "od":
            right = part is not None and _detections_right(part.objects, expected)
            lines.append(f"truth    {len(expected)} objects  {'(right)' if right else '(WRONG)'}")
            lines += [f"  {DetectedObject(o.label, o.bbox)}" for o in expected]
        else:
            right = part is not None and part.text == expected
            lines.append(f"truth    {expected}  {'(right)' if right else '(WRONG)'}")
    return lines


def _detections_right(predicted, expected) -> bool:
    from vlm_tools.demo.metrics import iou

    if sorted(o.label for o in predicted) != sorted(o.label for o in expected):
        return False
    boxes = {o.label: o.bbox for o in predicted}
    return all(iou(boxes[o.label], o.bbox) >= 0.5 for o in expected)


TRUE_COLOUR, PREDICTED_COLOUR = (40, 200, 80), (255, 0, 255)


def draw_detections(image: Image.Image, predicted, truth, path: Path) -> None:
    """True boxes in green, predicted boxes in magenta, at three times the size with thin lines, so the shapes
    and the labels stay readable."""
    scale = 3 * image.width
    canvas = image.convert("RGB").resize((scale, scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for objects, colour, below in ((truth, TRUE_COLOUR, False), (predicted, PREDICTED_COLOUR, True)):
        for obj in objects:
            x, y, w, h = (v * scale for v in obj.bbox)
            draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
            draw.text((x, y + h + 3) if below else (x, y - 13), obj.label, fill=colour)
    draw.text((6, 4), "true boxes", fill=TRUE_COLOUR)
    draw.text((6, 16), "predicted boxes", fill=PREDICTED_COLOUR)
    canvas.save(path)


def ask_all(client, image_path: Path, queries: list[DemoQuery]) -> list:
    answers = []
    for item in queries:
        answer = client.ask(image_path, item.query, temperature=0.0)    # greedy: every run prints the same answers
        answers.append(answer)
        lines = [format_answer(answer), *truth_lines(answer, item.truth)]     # as `vlm ask` prints it, + truth
        print(f"\n> {item.query}\n" + textwrap.indent("\n".join(lines), "  "))
    return answers


def run_demo(args: argparse.Namespace) -> int:
    from minivlm.cli import default_admin_key_file
    from minivlm.server.process import ServerOptions, TritonServer
    from vlm_client import VLMClient
    from vlm_tools.demo.scenes import make_scene

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    repo = ensure_repository(ensure_model(workdir, args.retrain), ensure_router(), workdir)
    scene = make_scene(*DEMO_SCENE)
    image_path = workdir / "scene.png"
    scene.image.save(image_path)
    print(f"[4/5] starting tritonserver on {repo} (grpc {args.grpc_port}, http {args.http_port})")
    options = ServerOptions(model_repository=repo, grpc_port=args.grpc_port, http_port=args.http_port,
                            metrics_port=args.metrics_port, startup_timeout_s=600,
                            admin_key_file=default_admin_key_file() if args.keep_serving else None)
    with TritonServer(options) as server, VLMClient(server.grpc_url) as client:
        print(f"[5/5] asking about {image_path} (truth: {scene.caption})")
        answers = ask_all(client, image_path, demo_queries(scene))
        detections = next(a for a in answers if a.task == "od")
        draw_detections(scene.image, detections.objects, scene.objects, workdir / "detections.png")
        print(f"\ndetections drawn to {workdir / 'detections.png'} (true boxes green, predicted magenta)")
        if args.keep_serving:
            _serve_until_signal(server, image_path, demo_queries(scene)[2].query)
    print("server stopped")
    return 0


def _serve_until_signal(server, image_path: Path, example: str) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"\nserving on grpc {server.grpc_url}, http {server.http_url}; try:\n"
          f"  .venv/bin/vlm ask -u {server.grpc_url} {image_path} \"{example}\"\n"
          f"admin key (restricted endpoints) in {server.options.admin_key_file} (mode 0600)\n"
          f"Ctrl-C stops the server.")
    while not stop.wait(1.0):
        if server.process.poll() is not None:
            raise RuntimeError(f"tritonserver exited; log tail:\n{server.log_tail()}")
