"""Build llama.cpp from the PyPI sdist of llama-cpp-python (its vendor/llama.cpp), cached, for llama_cpp_compare.

Downloads one thing, from PyPI, only when the cache lacks it: `pip download --no-binary :all:` of the sdist
(and PyPI's `cmake` when none is on PATH). Builds the `llama` library only (not llama.cpp's `common` and
tools: half the compile time) with -march=native, then a small step timer (STEP_TIMER below) linked
against it. Everything lives under the cache folder, so a second run rebuilds nothing.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

DEFAULT_VERSION = "0.3.36"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minivlm-llama-cpp"

# Loads one GGUF, prefills `batch` sequences of `prefix` random tokens each (their own KV cells, as our rows
# have), then on each "run" line times `steps` decode steps of one token per sequence, every row's logits
# computed, prints the steps' milliseconds on one line and rewinds the sequences to `prefix`.
STEP_TIMER = r"""
#include "llama.h"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void add(llama_batch & b, llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
    b.token[b.n_tokens] = token; b.pos[b.n_tokens] = pos; b.n_seq_id[b.n_tokens] = 1;
    b.seq_id[b.n_tokens][0] = seq; b.logits[b.n_tokens] = logits; b.n_tokens++;
}

int main(int argc, char ** argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s model.gguf threads batch prefix steps\n", argv[0]); return 2; }
    const int threads = atoi(argv[2]), batch = atoi(argv[3]), prefix = atoi(argv[4]), steps = atoi(argv[5]);
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.progress_callback = [](float, void *) { return true; };   // no loading dots
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = batch * (prefix + steps + 256);
    cp.n_batch = cp.n_ubatch = std::max(prefix, batch);
    cp.n_seq_max = batch;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    std::mt19937 rng(0);
    llama_batch b = llama_batch_init(std::max(prefix, batch), 0, 1);
    for (int s = 0; s < batch; ++s) {
        b.n_tokens = 0;
        for (int i = 0; i < prefix; ++i) add(b, rng() % n_vocab, i, s, i == prefix - 1);
        if (llama_decode(ctx, b)) { fprintf(stderr, "prefill failed\n"); return 1; }
    }
    printf("ready\n"); fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line) && line == "run") {
        for (int t = 0; t < steps; ++t) {
            b.n_tokens = 0;
            for (int s = 0; s < batch; ++s) add(b, rng() % n_vocab, prefix + t, s, true);
            auto start = std::chrono::steady_clock::now();
            if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
            llama_synchronize(ctx);
            std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
            printf("%s%.4f", t ? " " : "", ms.count());
        }
        printf("\n"); fflush(stdout);
        llama_memory_seq_rm(llama_get_memory(ctx), -1, prefix, -1);
    }
    llama_batch_free(b); llama_free(ctx); llama_model_free(model); llama_backend_free();
    return 0;
}
"""


def _progress(cmd: list[str], *, what: str, log: Path, env: dict | None = None) -> None:
    """Run `cmd`, printing its [n/m] progress lines; the whole output goes to `log`, its tail on failure."""
    print(f"{what}: {' '.join(map(str, cmd))}", flush=True)
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            out.write(line)
            if re.match(r"^\[\s*\d+(/\d+|%)\]", line):
                print(f"  {line.rstrip()[:110]}", flush=True)
    if process.wait():
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"{what} failed (exit {process.returncode}); last lines of {log}:\n" + "\n".join(tail))


def source_tree(version: str, cache: Path) -> Path:
    """The sdist's vendor/llama.cpp, downloaded from PyPI and unpacked once."""
    source = cache / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").exists():
        return source
    sdist = cache / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        _progress([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                   f"llama-cpp-python=={version}", "-d", str(sdist.parent)],
                  what="downloading the llama-cpp-python sdist from PyPI", log=cache / "download.log")
    print(f"unpacking {sdist}", flush=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(cache, filter="data")
    return source


def cmake_command(cache: Path) -> str:
    """cmake on PATH, else PyPI's `cmake` wheel installed into the cache."""
    found = shutil.which("cmake")
    if found:
        return found
    target = cache / "cmake-pypi"
    if not (target / "bin" / "cmake").exists():
        _progress([sys.executable, "-m", "pip", "install", "--target", str(target), "cmake"],
                  what="installing cmake from PyPI", log=cache / "cmake-install.log")
    return str(target / "bin" / "cmake")


def build_library(source: Path, build: Path, *, cache: Path, jobs: int) -> Path:
    """libllama (static, CPU backend, -march=native); skipped when already built."""
    library = build / "src" / "libllama.a"
    if library.exists():
        return library
    cmake = cmake_command(cache)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _progress([cmake, "-S", str(source), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
               "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"],
              what="configuring llama.cpp", log=build.parent / "configure.log")
    _progress([cmake, "--build", str(build), "-j", str(jobs), "--target", "llama"],
              what=f"building llama.cpp ({jobs} jobs; minutes)", log=build.parent / "build.log")
    return library


def build_step_timer(source: Path, build: Path) -> Path:
    """STEP_TIMER compiled against the built library; its name carries the source's hash."""
    digest = hashlib.sha256(STEP_TIMER.encode()).hexdigest()[:12]
    binary = build / f"minivlm-step-timer-{digest}"
    if binary.exists():
        return binary
    cpp = build / "minivlm_step_timer.cpp"
    cpp.write_text(STEP_TIMER)
    libraries = [next(build.rglob(name)) for name in ("libllama.a", "libggml.a", "libggml-cpu.a", "libggml-base.a")]
    compiler = os.environ.get("CXX") or shutil.which("c++") or "g++"
    _progress([compiler, "-O2", "-std=c++17", str(cpp), "-I", str(source / "include"), "-I",
               str(source / "ggml" / "include"), "-Wl,--start-group", *map(str, libraries), "-Wl,--end-group",
               "-fopenmp", "-lpthread", "-ldl", "-lm", "-o", str(binary)],
              what="compiling the step timer", log=build.parent / "step-timer.log")
    return binary


def ensure_llama_cpp(version: str = DEFAULT_VERSION, *, cache: Path = DEFAULT_CACHE, jobs: int = 2) -> tuple[Path, Path]:
    """-> (vendored llama.cpp source, step-timer binary)."""
    cache.mkdir(parents=True, exist_ok=True)
    source = source_tree(version, cache)
    build = cache / f"build-{version}"
    build_library(source, build, cache=cache, jobs=jobs)
    return source, build_step_timer(source, build)
