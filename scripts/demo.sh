#!/usr/bin/env bash
# The main job on a fresh machine: install, build (or reuse) the offline demo model, export it, start
# Triton, ask natural queries of all three kinds, draw the detections, stop. --keep-serving keeps it up.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
scripts/setup.sh
exec .venv/bin/vlm demo "$@"
