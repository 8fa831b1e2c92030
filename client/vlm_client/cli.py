"""`vlm ask` and `vlm route`: the client's subcommands of the `vlm` entry point.

The main entry point registers them with `add_client_subcommands` and calls ``args.func(args)``, which
returns the exit status; `main` here does the same without the model package.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from . import protocol as proto
from .errors import VLMError
from .sdk import DEFAULT_TIMEOUT_S, DEFAULT_URLS, VLMClient
from .step_times import StepTimes
from .top import DEFAULT_METRICS_URL
from .types import Answer, Route

ADMIN_KEY_ENV = "VLM_ADMIN_KEY"


def add_client_subcommands(subparsers: Any) -> None:
    """Register `ask` and `route` on an argparse subparsers object; each sets ``func`` to its handler."""
    ask = subparsers.add_parser("ask", help="ask a question about an image",
                                description="Send an image and a query to the vlm ensemble and print its answer.")
    _add_connection_args(ask)
    ask.add_argument("--task", choices=proto.TASKS, help="use this task instead of routing the query")
    ask.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens to generate (server default)")
    ask.add_argument("--temperature", type=float, metavar="F", help="sampling temperature, 0 = greedy")
    ask.add_argument("--top-p", type=float, metavar="F", help="nucleus sampling probability mass")
    ask.add_argument("--seed", type=int, metavar="N", help="sampling seed, for repeatable answers")
    ask.add_argument("--no-json-constraint", dest="json_constraint", action="store_false", default=None,
                     help="let a detection answer leave the JSON grammar (by default it is JSON by construction)")
    ask.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    ask.add_argument("--stream", action="store_true",
                     help="print the text as it is decoded (gRPC, the vlm_stream ensemble), then the answer")
    ask.add_argument("--trace", action="store_true",
                     help="also print each step's time (preprocess, router, vision encoder, queue, prefill, "
                          "decode, total); needs the server's admin key and an otherwise idle server")
    ask.add_argument("--admin-key", default=os.environ.get(ADMIN_KEY_ENV), metavar="KEY",
                     help=f"the server's admin key, for --trace (default: ${ADMIN_KEY_ENV}; prefer it: a key "
                          f"given here shows in the process list); `vlm serve` keeps it in its --admin-key-file")
    ask.add_argument("image", help="image file: JPEG, PNG or WebP")
    ask.add_argument("query", help="question or instruction, e.g. 'what is on the table?' or '[OD]'")
    ask.set_defaults(func=run_ask)

    route = subparsers.add_parser("route", help="show which task queries are routed to",
                                  description="Route queries with the route ensemble, one output line each.")
    _add_connection_args(route)
    route.add_argument("--json", action="store_true", help="print one JSON object per query")
    route.add_argument("queries", nargs="*", metavar="QUERY",
                       help="queries to route; read from stdin, one per line, when none are given")
    route.set_defaults(func=run_route)

    top = subparsers.add_parser("top", help="watch the server: throughput, first-token latency, queue, routing",
                                description="Scrape the server's Prometheus endpoint every interval and show what "
                                            "happened in it (the Grafana dashboard's numbers, in the terminal).")
    top.add_argument("-u", "--url", default=DEFAULT_METRICS_URL, help=f"metrics URL (default {DEFAULT_METRICS_URL})")
    top.add_argument("--interval-s", type=float, default=2.0, metavar="F", help="seconds between scrapes (default 2)")
    top.add_argument("--once", action="store_true", help="print one interval and exit")
    top.set_defaults(func=run_top_command)


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--url", help=f"server host:port (default {DEFAULT_URLS['grpc']} for gRPC, "
                                            f"{DEFAULT_URLS['http']} for HTTP)")
    parser.add_argument("--protocol", choices=tuple(DEFAULT_URLS), default="grpc",
                        help="transport (default grpc)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, metavar="F",
                        help=f"each request's deadline: the server stops decoding it then (default "
                             f"{DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--tls-ca", metavar="PEM", help="gRPC over TLS: the CA that signed the server's certificate")
    parser.add_argument("--tls-cert", metavar="PEM", help="mutual TLS: this client's certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="mutual TLS: this client's private key")


def _connect(args: argparse.Namespace) -> VLMClient:
    return VLMClient(args.url, protocol=args.protocol, timeout_s=args.timeout_s, tls_ca=args.tls_ca,
                     tls_cert=args.tls_cert, tls_key=args.tls_key)


def _report_errors(run: Callable[[], None]) -> int:
    """Exit status 0, or 1 after printing `error (step): message` to stderr."""
    try:
        run()
    except VLMError as exc:
        where = f" ({exc.step})" if exc.step else ""
        print(f"error{where}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:   # unreadable image file, value rejected before sending
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_ask(args: argparse.Namespace) -> int:
    def run() -> None:
        options = dict(task=args.task, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, seed=args.seed, json_constraint=args.json_constraint)
        if args.trace and (args.stream or not args.admin_key):
            raise ValueError("--trace needs --admin-key (or $VLM_ADMIN_KEY) and no --stream")
        steps = None
        with _connect(args) as client:
            if args.trace:
                answer, steps = client.ask_traced(args.image, args.query, admin_key=args.admin_key, **options)
            elif not args.stream:
                answer = client.ask(args.image, args.query, **options)
            else:
                for chunk in client.ask_stream(args.image, args.query, **options):
                    if chunk.answer is None and not args.json:
                        print(chunk.text, end="", flush=True)
                    answer = chunk.answer
                print("" if args.json else "\n", end="")
        if args.json:
            print(json.dumps(answer.to_dict() | ({"step_times": steps.to_dict()} if steps else {})))
        else:
            print(format_answer(answer) + ("" if steps is None else "\n" + format_step_times(steps)))
    return _report_errors(run)


def format_step_times(steps: StepTimes) -> str:
    return "step times (router and vision encoder run side by side)\n" + steps.table()


def format_answer(answer: Answer) -> str:
    lines = [f"task     {answer.task} (by {answer.routing}, confidence {answer.confidence:.2f})",
             f"text     {answer.text}"]
    if "od" in answer.task.split("+"):
        repaired = "" if answer.json_valid else " (output JSON was repaired)"
        lines.append(f"objects  {len(answer.objects)}{repaired}")
        lines += [f"  {o}" for o in answer.objects]
    if len(answer.parts) > 1:
        lines += [f"  [{part.task}] {part.text}" for part in answer.parts]
    lines.append(f"finish   {answer.finish_reason}, {answer.prompt_tokens} prompt + "
                 f"{answer.completion_tokens} completion tokens")
    return "\n".join(lines)


def run_top_command(args: argparse.Namespace) -> int:
    from .top import run_top

    try:
        run_top(args.url, interval_s=args.interval_s, once=args.once)
    except OSError as exc:
        print(f"error: cannot read {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0


def read_queries(stream: TextIO) -> list[str]:
    """One query per non-blank line."""
    return [line.strip() for line in stream if line.strip()]


def run_route(args: argparse.Namespace) -> int:
    def run() -> None:
        queries = args.queries or read_queries(sys.stdin)
        with _connect(args) as client:
            routes = client.route_many(queries)
        for line in format_routes(queries, routes, as_json=args.json):
            print(line)
    return _report_errors(run)


def format_routes(queries: Iterable[str], routes: Iterable[Route], *, as_json: bool) -> list[str]:
    if as_json:
        return [json.dumps({"query": q, **r.to_dict()}) for q, r in zip(queries, routes)]
    return [f"{r.task}\t{r.confidence:.3f}\t{q}" for q, r in zip(queries, routes)]


def main(argv: list[str] | None = None) -> int:
    """`vlm` with only the client's subcommands, for installs without the model package."""
    parser = argparse.ArgumentParser(prog="vlm", description="Client for the mini-VLM Triton ensembles.")
    add_client_subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
