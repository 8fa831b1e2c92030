#!/usr/bin/env python3
"""Export a router (MiniLM folder or the notebook's task_classifier.pt) -> router ONNX + tokenizer, checked.

    python export/router.py mini-vlm-routing/task_classifier.pt --output router.onnx

The same as `vlm router-export`: a thin script over the export library `minivlm.export` (specs, one export and
validation path); `--help` lists the options.
"""
import sys

from minivlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["router-export", *sys.argv[1:]]))
