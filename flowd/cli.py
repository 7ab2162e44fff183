"""Command line: argument parsing only; the work lives in the modules each command calls."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from flowd import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowd", description="NetFlow/IPFIX/sFlow collector and indexer")
    parser.add_argument("--version", action="version", version=f"flowd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    decode = commands.add_parser("decode", help="decode captures or payload files to NDJSON documents")
    decode.add_argument("files", nargs="+", help="pcap, pcapng, .dat payloads (in order) or IPFIX files")
    decode.add_argument("--options", action="store_true", help="also print options records")
    decode.add_argument("--enrich", action="store_true", help="apply the configured enrichment")

    run = commands.add_parser("run", help="serve until SIGTERM/SIGINT")
    run.add_argument("--config", help="TOML configuration file")

    check = commands.add_parser("check-config", help="print the effective configuration and where each value came from")
    check.add_argument("--config", help="TOML configuration file")

    args = parser.parse_args(argv)
    if args.command == "decode":
        return _decode(args)
    if args.command == "run":
        from flowd.server.app import run_server

        return run_server(args.config)
    if args.command == "check-config":
        return _check_config(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _check_config(args: argparse.Namespace) -> int:
    from flowd.config import describe_settings, load_settings
    from flowd.errors import ConfigError

    try:
        loaded = load_settings(args.config)
    except ConfigError as error:
        print(f"flowd: configuration error: {error}", file=sys.stderr)
        return 2
    print(describe_settings(loaded))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from flowd.offline import DecodeSummary, decode_documents

    summary = DecodeSummary()
    out = sys.stdout.buffer
    try:
        for document in decode_documents(args.files, summary, include_options=args.options):
            out.write(orjson.dumps(document) + b"\n")
        out.flush()
    except BrokenPipeError:  # `flowd decode x.pcap | head` is normal use
        sys.stderr.close()
        return 0
    print(summary.describe(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
