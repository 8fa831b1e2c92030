#!/usr/bin/env bash
# Serve the model repository at $REPO; export it first from the mounted notebook checkpoint at $CHECKPOINT when
# $REPO holds no repository built from this image's template (a fresh volume, or an image upgrade).
# Base models: pass --vision-model/--language-model through VLM_EXPORT_ARGS when the checkpoint's names are hub
# names and the weights are mounted locally (the container does not download). DECODER_PRECISION: the GPU
# decoder's format, bf16 (default: bf16 weights, activations and cache) or fp32 (HF's greedy tokens exactly).
set -euo pipefail
CHECKPOINT=${CHECKPOINT:-/checkpoint}
REPO=${REPO:-/models/repository}
# The admin key unlocks model control, shared memory, statistics, trace and logging: ADMIN_KEY_FILE names a
# mounted secret holding it (preferred: `docker inspect` shows ADMIN_KEY), or ADMIN_KEY holds it.
if [[ -z "${ADMIN_KEY_FILE:-}" && -z "${ADMIN_KEY:-}" ]]; then
  echo "mini-vlm: set ADMIN_KEY_FILE (a file holding the admin key) or ADMIN_KEY" >&2
  exit 2
fi

if python3 -c "import sys; from minivlm.export.repository import built_from_this_template as ok; sys.exit(not ok('$REPO'))"; then
  echo "mini-vlm: serving the repository already built at $REPO"
else
  echo "mini-vlm: exporting $CHECKPOINT to $REPO (native onnxruntime backend, KIND_GPU)"
  # VLM_EXPORT_ARGS is split into words on purpose: it holds flags
  # shellcheck disable=SC2086
  vlm export "$CHECKPOINT" --output "$REPO" --onnx-backend onnxruntime --device gpu \
    --decoder-precision "${DECODER_PRECISION:-bf16}" ${VLM_EXPORT_ARGS:-}
fi

# The same restricted APIs as `vlm serve` (minivlm/server/process.py RESTRICTED_APIS). The key is not on the
# command line (any user of the host reads /proc/PID/cmdline): secret_argv starts tritonserver with a
# placeholder there, which its preloaded library swaps for the key before main (compiled into the image).
RESTRICTED=model-repository,shared-memory,statistics,trace,logging
KEY=$(python3 -c "from minivlm.server.secret_argv import PLACEHOLDER; print(PLACEHOLDER)")
exec python3 -m minivlm.server.secret_argv tritonserver --model-repository="$REPO" \
  --grpc-restricted-protocol="$RESTRICTED:admin-key=$KEY" \
  --http-restricted-api="$RESTRICTED:admin-key=$KEY" \
  --backend-config=python,shm-default-byte-size=67108864 --strict-readiness=true --exit-on-error=true "$@"
