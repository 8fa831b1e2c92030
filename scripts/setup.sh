#!/usr/bin/env bash
# One-time setup on a fresh machine: Debian libraries, a virtual environment in .venv, the project with
# everything it needs to export, serve, test and benchmark. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_system_deps.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 is the CPU build pip finds on this machine's disk; any other version downloads GBs.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[model,tools,dev]"
echo "setup done: activate with '. .venv/bin/activate'"
