#!/usr/bin/env bash
# Assemble the wheels scripts/gpu-check.sh installs on the GPU machine (CPython 3.12, manylinux x86_64, no
# network; ../shared/DESIGN.md "The GPU machine"), and check they fit what travels with the tree: 64 MiB for
# the tracked files and the wheels together. Run it where pip can download (not on the GPU machine):
#
#   scripts/gpu-wheels.sh [DEST]      (default shared/wheels; gpu-check.sh --wheels DEST)
#
# What the GPU machine lacks, by what needs it: nvidia-pytriton (tritonserver), tritonclient (the SDK's gRPC
# client; repacked without perf_analyzer, whose two 20 MB binaries the check never runs and the budget cannot
# hold), llguidance (the OD grammar), onnxscript + onnx_ir (torch.onnx's exporter), pillow (image decoding).
# Not carried, too large: the pretrained MiniLM package (the check serves the notebook's router) and matplotlib
# (the bench writes JSON; `vlm bench --from-json` draws the plot elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-shared/wheels}
BUDGET=$((64 * 1024 * 1024))
TARGET=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp --abi cp312
        --platform manylinux_2_35_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$DEST"
python3 -m pip download "${TARGET[@]}" --dest "$DEST" \
  nvidia-pytriton==0.7.0 llguidance pillow onnxscript onnx_ir

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
python3 -m pip download "${TARGET[@]}" --dest "$staging" tritonclient==2.51.0
python3 - "$staging" "$DEST" <<'EOF'
"""Copy the tritonclient wheel without its .data/ folder (perf_analyzer, perf_client), RECORD rewritten."""
import pathlib, sys, zipfile
source = next(pathlib.Path(sys.argv[1]).glob("tritonclient-*.whl"))
target = pathlib.Path(sys.argv[2]) / source.name
with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as slim:
    kept = [i for i in wheel.infolist() if ".data/" not in i.filename]
    for item in kept:
        data = wheel.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = "".join(line + "\n" for line in data.decode().splitlines() if ".data/" not in line).encode()
        slim.writestr(item, data)
print(f"{target.name}: {source.stat().st_size / 2**20:.1f} MiB -> {target.stat().st_size / 2**20:.1f} MiB")
EOF

tree=$(git ls-files -z | xargs -0 cat | wc -c)
python3 - "$tree" "$BUDGET" "$DEST"/*.whl <<'EOF'
import pathlib, sys
tree, budget, wheels = int(sys.argv[1]), int(sys.argv[2]), [pathlib.Path(w) for w in sys.argv[3:]]
for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
    print(f"  {wheel.stat().st_size / 2**20:6.1f} MiB  {wheel.name}")
total = tree + sum(w.stat().st_size for w in wheels)
print(f"tracked tree {tree / 2**20:.1f} MiB + wheels = {total / 2**20:.1f} MiB of {budget / 2**20:.0f} MiB")
if total > budget:
    sys.exit("gpu-wheels: over what the device tool carries; drop a wheel the GPU machine already has")
EOF
