#!/usr/bin/env bash
# System libraries the local tooling needs that PyPI cannot provide.
# perf_analyzer (from the tritonclient wheel) links libb64.so.0d, which only Debian's libb64-0d ships.
# gcc (with libc6-dev): the C libraries built on first use, the CPU decoder's kernels (minivlm/decoding/native/,
# OpenMP included) and the admin-key preload (minivlm/server/secret_argv.py).
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

PACKAGES=(libb64-0d gcc libc6-dev)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system dependencies already installed: ${PACKAGES[*]}"
    exit 0
fi

# Run as root directly, or through sudo when it is available.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing: ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
