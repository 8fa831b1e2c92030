"""The tools' `vlm` subcommands, found by the runtime's `vlm` through the `vlm.commands` entry point group."""
from __future__ import annotations

from vlm_tools.bench.cli import add_bench_subcommands
from vlm_tools.demo.cli import add_demo_subcommands
from vlm_tools.demo.quickstart import add_demo_command
from vlm_tools.router_training.cli import add_router_subcommands


def add_tool_subcommands(subparsers) -> None:
    add_demo_command(subparsers)
    add_router_subcommands(subparsers)
    add_demo_subcommands(subparsers)
    add_bench_subcommands(subparsers)
