#!/usr/bin/env python3
"""Export a notebook checkpoint folder -> a servable Triton model repository (every graph checked against PyTorch).

    python export/model_repository.py mini-vlm-routing/ --output repo/ [--router notebook|DIR] [--device gpu]

The same as `vlm export`: a thin script over the export library `minivlm.export` (specs, one export and
validation path); `--help` lists the options.
"""
import sys

from minivlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
