#!/usr/bin/env bash
# Export the mounted notebook checkpoint for the GPU (native onnxruntime backend, KIND_GPU), then serve.
# Base models: pass --vision-model/--language-model through VLM_EXPORT_ARGS when the checkpoint's names
# are hub names and the weights are mounted locally (the container does not download).
set -euo pipefail
CHECKPOINT=${CHECKPOINT:-/checkpoint}
REPO=${REPO:-/models}
vlm export "$CHECKPOINT" --output "$REPO" --onnx-backend onnxruntime --device gpu ${VLM_EXPORT_ARGS:-}
exec tritonserver --model-repository="$REPO" \
  --grpc-restricted-protocol=model-repository,shared-memory,trace,logging:admin-key="${ADMIN_KEY:?set ADMIN_KEY}" \
  --http-restricted-api=model-repository,shared-memory,trace,logging:admin-key="${ADMIN_KEY}" \
  --backend-config=python,shm-default-byte-size=67108864 --strict-readiness=true --exit-on-error=true "$@"
