"""The container stack and the command line, checked statically (no Docker engine here).

A newcomer runs `docker compose up -d` on a laptop that already has PostgreSQL on 5432: every
service must run a command `atp` knows, every long-running service must say whether it is
healthy, and no host port may be fixed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.cli import COMMANDS, build_parser
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def parses(argv: list[str]) -> argparse.Namespace:
    """The namespace `atp` builds from argv; fails the test when argparse refuses it."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown subcommand or option
        pytest.fail(f"`atp {' '.join(argv)}` is not a valid command line ({exc})")


def test_every_compose_service_runs_a_real_atp_subcommand() -> None:
    services = compose()["services"]
    atp_services = {name: s for name, s in services.items() if s.get("image") == "atp:latest"}
    assert {"migrate", "api", "projector", "webhooks", "push-shop"} <= set(atp_services)
    for name, service in atp_services.items():
        command = service["command"]
        assert command[0] == "atp", name
        args = parses(command[1:])
        assert args.command in COMMANDS, name


def test_every_long_running_service_has_a_healthcheck_that_atp_understands() -> None:
    """Only the one-shot `migrate` (restart "no") may lack a healthcheck; a healthcheck that
    calls `atp` must be a valid `atp` command line too."""
    for name, service in compose()["services"].items():
        if service.get("restart") == "no":
            continue
        check = service.get("healthcheck", {}).get("test")
        assert check, f"{name} has no healthcheck"
        assert check[0] in ("CMD", "CMD-SHELL"), name
        if check[1] == "atp":
            parses(check[2:])


def test_host_ports_are_configurable_and_bound_to_loopback() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\$\{ATP_[A-Z_]+_PORT:-\d+\}:\d+", port), (name, port)


def test_the_postgres_driver_needs_no_system_libpq() -> None:
    """The project depends on psycopg's binary build; in a fresh interpreter the libpq that
    psycopg loads is the one bundled in the psycopg_binary wheel, not a system library (the
    `python:3.11-slim` image has none)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("psycopg[binary]") for d in deps), deps
    probe = (
        "import psycopg\n"
        "print(psycopg.pq.__impl__)\n"
        "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') "
        "if 'libpq' in l})))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    impl, *libraries = done.stdout.split()
    assert impl == "binary"
    assert libraries and all("psycopg_binary" in path for path in libraries), libraries


def test_every_option_says_what_it_does_and_which_variable_it_overrides() -> None:
    parser = build_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    stack = list(subparsers.items())
    while stack:
        name, sub = stack.pop()
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend((f"{name} {n}", p) for n, p in action.choices.items())
                continue
            assert action.help, f"atp {name}: {action.option_strings or action.dest} has no help"
            setting = action.dest
            if setting in Settings.__struct_fields__ and action.option_strings:
                assert f"ATP_{setting.upper()}" in action.help, (name, action.help)


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "--version"], capture_output=True, text=True, check=True
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.stdout.strip() == f"atp {version}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ATP_PORT", "abc"),
        ("ATP_PORT", "70000"),
        ("ATP_WORKERS", "1.5"),
        ("ATP_WORKERS", "0"),
        ("ATP_READ_WAIT", "x"),
        ("ATP_LOG_LEVEL", "loud"),
        ("ATP_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(variable: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"atp: {variable}={value!r} is not valid"), lines


def test_the_docs_link_only_to_files_in_the_repository() -> None:
    """A fresh clone has every page the README and docs/ point to (no `../shared/...`)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert ROOT / "docs" / "contract.md" in pages
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), (page.name, target)
