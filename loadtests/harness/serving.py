"""The command line of the benchmark's baseline apps: the same uvicorn call `atp serve` makes
(api/cli.py), so the server side of a comparison is identical."""

from __future__ import annotations

import argparse


def server_parser(
    prog: str, description: str | None, port: int, workers: int
) -> argparse.ArgumentParser:
    """--host, --port (default `port`), --workers (default `workers`) and --log-level."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--workers", type=int, default=workers)
    p.add_argument("--log-level", default="warning")
    return p


def run(factory: str, args: argparse.Namespace) -> None:
    """uvicorn on `factory` ("module:function" returning the app) with the parsed options;
    returns when the server stops."""
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
