#!/usr/bin/env bash
# The GPU check: one script for a bare GPU machine (Python 3.12 and CUDA torch preinstalled, no network; see
# ../shared/DESIGN.md "The GPU machine"), meant to finish in under 8 minutes. docs/gpu.md says what it proves.
#
#   scripts/gpu-check.sh [--wheels DIR] [--out DIR] [--dry-run]
#
#   --wheels DIR  the wheels carried beside the tree (default shared/wheels): nvidia-pytriton, tritonclient and
#                 what the machine lacks (scripts/gpu-wheels.sh assembles the folder and checks its size)
#   --out DIR     results: gpu-check.json (step timings), the gpu tests' log, bench/bench.json (default $OUT,
#                 else ./gpu-check-results)
#   --dry-run     no GPU needed: check the tree's plumbing (imports, the gpu tests' collection, the bench's
#                 arguments) and print every command a real run would run, timed like a real run
#
# Steps, each timed, the first failure stops the run with its name and exit status:
#   1. preflight     python, nvidia-smi, torch sees CUDA
#   2. install       the carried wheels, offline, into a venv that keeps the machine's packages
#   3. export        the full-size random-weight model, `--device gpu` (KIND_GPU everywhere), cached
#   4. gpu tests     tests marked gpu: CUDA decoder == CPU reference, the GPU-exported ensemble on the pip
#                    tritonserver (started by the tests' fixture) == the in-process reference, 16 concurrent asks
#   5. bench         `vlm bench --device cuda` at c = 1, 16, 64 against in-process transformers generate on the
#                    same GPU; JSON (the plot where matplotlib exists, else `vlm bench --from-json` redraws it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

WHEELS=shared/wheels
OUT_DIR=${OUT:-$ROOT/gpu-check-results}
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) echo "gpu-check: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
CACHE=$OUT_DIR/cache                       # the exported repository; `vlm bench` reuses it
VENV=$ROOT/.gpu-venv
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT:$ROOT/client:$ROOT/tools${PYTHONPATH:+:$PYTHONPATH}   # the tree, uninstalled

TIMINGS=$OUT_DIR/gpu-check.timings
: > "$TIMINGS"
CURRENT=""
on_exit() {
  local status=$?
  if [ $status -ne 0 ] && [ -n "$CURRENT" ]; then
    echo "gpu-check: FAILED at step '$CURRENT' (exit $status); timings so far in $TIMINGS" >&2
    echo "$CURRENT failed $status" >> "$TIMINGS"
  fi
  "$PYTHON" - "$TIMINGS" "$OUT_DIR/gpu-check.json" "$DRY_RUN" "$status" <<'EOF' || true
import json, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
steps = [{"step": r[0], "seconds": float(r[1])} if r[1] != "failed" else {"step": r[0], "failed": int(r[2])} for r in rows]
json.dump({"dry_run": sys.argv[3] == "1", "exit": int(sys.argv[4]), "steps": steps}, open(sys.argv[2], "w"), indent=2)
EOF
}
trap on_exit EXIT

step() {   # step NAME COMMAND...: run (or, dry, print) and time it
  CURRENT=$1; shift
  echo "=== [$(date +%T)] $CURRENT: $*"
  local start=$SECONDS
  if [ $DRY_RUN -eq 1 ] && [ "${ALWAYS:-0}" -ne 1 ]; then
    echo "    (dry run: not run)"
  else
    "$@"
  fi
  local took=$((SECONDS - start))
  echo "=== $CURRENT done in ${took}s"
  echo "$CURRENT $took" >> "$TIMINGS"
  CURRENT=""
}

preflight() {
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), sys.version; print("python", sys.version.split()[0])'
  # TritonServer compiles a small preload library that keeps the admin key off tritonserver's command line
  command -v cc > /dev/null || { echo "no C compiler (cc): needed by minivlm/server/secret_argv.py" >&2; return 1; }
  if [ $DRY_RUN -eq 1 ]; then
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda:", torch.cuda.is_available())'
    return
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA"; print("torch", torch.__version__, torch.cuda.get_device_name())'
}

install() {
  [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null || { echo "no wheels in $WHEELS (scripts/gpu-wheels.sh)" >&2; return 1; }
  # the machine's torch, transformers, onnx, numpy stay; --no-deps: the wheels' pins (pytriton's numpy<2)
  # would otherwise ask for an index this machine cannot reach
  "$PYTHON" -m venv --without-pip --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "$WHEELS"/*.whl
  PYTHON=$VENV/bin/python
  export PATH=$VENV/bin:$PATH              # tritonserver's stubs find this interpreter's packages first
}

check_imports() {   # everything the steps import, named when missing
  "$PYTHON" - <<'EOF'
import importlib
needed = ["torch", "transformers", "onnx", "onnxruntime", "onnxscript", "numpy", "PIL", "tqdm", "grpc",
          "google.protobuf", "llguidance", "tritonclient.grpc", "pytriton", "minivlm.serving.scheduler",
          "minivlm.export.repository", "vlm_client", "vlm_tools.bench.run", "pytest"]
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - report every missing piece at once
        missing.append(f"{name} ({type(error).__name__}: {error})")
if missing:
    raise SystemExit("missing: " + "; ".join(missing))
print(f"all {len(needed)} imports found")
EOF
}

export_model() {
  "$PYTHON" -c "
from pathlib import Path
from vlm_tools.bench.served import prepare_repository
print(prepare_repository(Path('$CACHE'), device='cuda', router='notebook'))"
}

# One served mode, streamed: its clients time the first token (TTFT is a target) as well as whole answers; a
# second mode would cost another server start and the 8 minutes. --requests 16: c=1 and c=16 run 18 requests
# (whole rounds of the mix), c=64 runs 66.
BENCH_ARGS=(--device cuda --router notebook --skip-notebook --concurrency 1,16,64 --requests 16
            --served-batching continuous:bf16+stream --max-live-rows 64 --decode-batches 1,16,64
            --generate-requests 3 --cache-dir "$CACHE" --output "$OUT_DIR/bench" --no-progress)

bench_arguments_parse() {   # dry run: the real parser takes exactly the arguments step 5 passes
  "$PYTHON" - "${BENCH_ARGS[@]}" <<'EOF'
import argparse, sys
from vlm_tools.bench.cli import add_bench_command
parser = argparse.ArgumentParser(prog="vlm")
add_bench_command(parser.add_subparsers(dest="command"))
args = parser.parse_args(["bench", *sys.argv[1:]])
print("bench arguments parse:", {k: v for k, v in vars(args).items() if k not in ("func", "mix")})
EOF
}

ALWAYS=1 step preflight preflight
if [ $DRY_RUN -eq 1 ]; then
  step install install
  ALWAYS=1 step imports check_imports
  step export export_model
  ALWAYS=1 step gpu-tests-collect "$PYTHON" -m pytest -p no:cacheprovider --collect-only -q -m gpu \
    tests/unit/test_decoder_cuda.py tests/integration/test_gpu_serving.py
  step gpu-tests "$PYTHON" -m pytest -p no:cacheprovider -q -m gpu tests/unit/test_decoder_cuda.py \
    tests/integration/test_gpu_serving.py
  ALWAYS=1 step bench-arguments bench_arguments_parse
  step bench "$PYTHON" -m vlm_tools.bench bench "${BENCH_ARGS[@]}"
else
  step install install
  step imports check_imports
  step export export_model
  # -rs: a skipped gpu test (no CUDA after all) is printed; zero passed must fail the check, not pass it
  step gpu-tests "$PYTHON" -m pytest -p no:cacheprovider -q -rs -m gpu --junitxml="$OUT_DIR/gpu-tests.xml" \
    tests/unit/test_decoder_cuda.py tests/integration/test_gpu_serving.py
  step gpu-tests-ran "$PYTHON" -c "
import sys, xml.etree.ElementTree as ET
root = ET.parse('$OUT_DIR/gpu-tests.xml').getroot()
suite = root if root.tag == 'testsuite' else root.find('testsuite')
ran = int(suite.get('tests')) - int(suite.get('skipped'))
print(ran, 'gpu tests ran'); sys.exit(ran == 0)"
  step bench "$PYTHON" -m vlm_tools.bench bench "${BENCH_ARGS[@]}"
fi
echo "gpu-check: all steps passed; results in $OUT_DIR"
