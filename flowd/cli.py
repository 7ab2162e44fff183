"""Command line: argument parsing only; the work lives in the modules each command calls."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from flowd import __version__
from flowd.allocator import tune_allocator

if TYPE_CHECKING:
    from flowd.config import Settings


def main(argv: Sequence[str] | None = None) -> int:
    tune_allocator()
    parser = argparse.ArgumentParser(prog="flowd", description="NetFlow/IPFIX/sFlow collector and indexer")
    parser.add_argument("--version", action="version", version=f"flowd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    decode = commands.add_parser("decode", help="decode captures or payload files to NDJSON documents")
    decode.add_argument("files", nargs="+", help="pcap, pcapng, .dat payloads (in order) or IPFIX files")
    decode.add_argument("--options", action="store_true", help="also print options records")
    decode.add_argument("--enrich", action="store_true", help="apply the configured enrichment")
    decode.add_argument("--config", help="TOML configuration file (for --enrich)")

    run = commands.add_parser("run", help="serve until SIGTERM/SIGINT")
    run.add_argument("--config", help="TOML configuration file")

    check = commands.add_parser("check-config", help="print the effective configuration and where each value came from")
    check.add_argument("--config", help="TOML configuration file")

    templates = commands.add_parser(
        "templates", help="the templates and sampling state each exporter gave flowd (from the persisted snapshots)"
    )
    templates.add_argument("--config", help="TOML configuration file (templates.path)")
    templates.add_argument("--json", action="store_true", help="print the snapshots as JSON, with field names")
    templates.add_argument("--no-names", action="store_true", help="leave out the field names")

    status = commands.add_parser(
        "status", help="what a running flowd received, delivered and lost, per exporter (from its /metrics)"
    )
    status.add_argument("--config", help="TOML configuration file (metrics.address)")
    status.add_argument("--url", help="the metrics URL (default: http://<metrics.address>/metrics)")
    status.add_argument("--json", action="store_true", help="print the summary as JSON")

    setup = commands.add_parser("setup", help="install the index template, lifecycle policy and data stream")
    from flowd.output.index_template import add_setup_arguments

    add_setup_arguments(setup)
    setup.add_argument("--config", help="TOML configuration file (namespace, retention, credentials)")
    setup.add_argument("--kibana", help="Kibana URL: also import the dashboards")
    setup.add_argument("--space", default="", help="Kibana space to import into (default space when empty)")

    bench = commands.add_parser("bench", help="zero-loss throughput of flowd (and peers) on loopback")
    from flowd.bench.cli import add_bench_arguments

    add_bench_arguments(bench)

    args = parser.parse_args(argv)
    if args.command == "decode":
        return _decode(args)
    if args.command == "run":
        from flowd.server.app import run_server

        return run_server(args.config)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "setup":
        return _setup(args)
    if args.command == "templates":
        return _templates(args)
    if args.command == "status":
        return _status(args)
    if args.command == "bench":
        from flowd.bench.cli import run_bench

        return run_bench(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _check_config(args: argparse.Namespace) -> int:
    from flowd.config import describe_settings, load_settings, log_level
    from flowd.errors import ConfigError

    try:
        loaded = load_settings(args.config)
        log_level()  # what `flowd run` also refuses
    except ConfigError as error:
        print(f"flowd: configuration error: {error}", file=sys.stderr)
        return 2
    try:
        print(describe_settings(loaded))
    except BrokenPipeError:  # `flowd check-config | head`
        sys.stderr.close()
    return 0


def _load(path: str | None) -> Settings | None:
    from flowd.config import load_settings
    from flowd.errors import ConfigError

    try:
        return load_settings(path).settings
    except ConfigError as error:
        print(f"flowd: configuration error: {error}", file=sys.stderr)
        return None


def _templates(args: argparse.Namespace) -> int:
    import time

    from flowd.template_report import describe, read_snapshots

    settings = _load(args.config)
    if settings is None:
        return 2
    base = settings.templates.path
    snapshots = read_snapshots(base)
    try:
        if args.json:
            for snapshot in snapshots:
                templates = [
                    {k: v for k, v in item.items() if k != "names"} if args.no_names else item
                    for item in snapshot.templates
                ]
                content = {"path": str(snapshot.path), "written_at": snapshot.written_at, "error": snapshot.error}
                print(orjson.dumps({**content, "templates": templates, "domains": snapshot.domains}).decode())
        else:
            print(describe(snapshots, base, time.time(), names=not args.no_names))
    except BrokenPipeError:  # `flowd templates | head`
        sys.stderr.close()
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from flowd.status_report import describe, summarize

    url = args.url
    if not url:
        settings = _load(args.config)
        if settings is None:
            return 2
        url = f"http://{settings.metrics.address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
        print(f"flowd: cannot read {url}: {error}", file=sys.stderr)
        return 1
    try:
        status = summarize(text)
    except ValueError as error:  # another service on that port: HTML, JSON, a login page
        print(f"flowd: {url} did not answer with Prometheus metrics: {error}", file=sys.stderr)
        return 1
    print(orjson.dumps(status.to_json()).decode() if args.json else describe(status, url))
    return 0


def _setup(args: argparse.Namespace) -> int:
    from flowd.output.index_template import run_setup

    settings = _load(args.config)
    if settings is None:
        return 2
    status = run_setup(args, settings.elasticsearch)
    if args.kibana and status == 0:
        import asyncio

        from flowd.output.kibana import import_dashboards

        status = asyncio.run(
            import_dashboards(
                args.kibana,
                space=args.space or None,
                user=args.user or settings.elasticsearch.user,
                password=args.password or settings.elasticsearch.password,
                api_key=args.api_key or settings.elasticsearch.api_key,
                ca_file=args.ca_file or settings.elasticsearch.ca_file or None,
                verify=not args.insecure,
                printer=print,
            )
        )
    return status


def _decode(args: argparse.Namespace) -> int:
    from flowd.offline import DecodeSummary, decode_documents, decode_enriched_documents

    summary = DecodeSummary()
    out = sys.stdout.buffer
    try:
        if args.enrich:
            settings = _load(args.config)
            if settings is None:
                return 2
            documents = decode_enriched_documents(args.files, summary, settings.enrich, include_options=args.options)
        else:
            documents = decode_documents(args.files, summary, include_options=args.options)
        for document in documents:
            out.write(orjson.dumps(document) + b"\n")
        out.flush()
    except BrokenPipeError:  # `flowd decode x.pcap | head` is normal use
        sys.stderr.close()
        return 0
    for problem in [*summary.unreadable_files, *summary.cut_files]:
        print(f"flowd: {problem}", file=sys.stderr)
    print(summary.describe(), file=sys.stderr)
    return 1 if summary.unreadable_files else 0


if __name__ == "__main__":
    sys.exit(main())
