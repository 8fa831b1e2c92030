#!/usr/bin/env python3
"""Export the checkpoint's ViT + projector -> vision_encoder ONNX, checked against PyTorch at batch 1 and 4.

    python export/vision_encoder.py mini-vlm-routing/ --output vision_encoder.onnx

The same as `vlm vision-export`: a thin script over the export library `minivlm.export` (specs, one export and
validation path); `--help` lists the options.
"""
import sys

from minivlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["vision-export", *sys.argv[1:]]))
