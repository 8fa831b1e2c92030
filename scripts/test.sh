#!/usr/bin/env bash
# The test suite, as CI runs it: install (idempotent), then pytest. Integration tests start their own
# tritonserver on free ports. Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
