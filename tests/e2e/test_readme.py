"""The README's walk-through, run as a newcomer pastes it: `make run` (embedded, demo loaded),
then every `curl` of the "Try it" section and then of the "Planners" section back to back, with no sleeps, each answer checked
against the `# {...}` figures the README prints under it (`...` stands for anything, `<RID>`
for the reservation id, which later commands use).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import atp, running_service, service_env

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"


@dataclass
class Step:
    command: str
    expected: str
    """The figures the README prints under the command ("" when it prints none)."""


def walkthrough() -> tuple[str, list[Step]]:
    """(the `export` line, the steps) of the README's "Try it" section, then those of its
    "Planners" section (which starts where the first left off)."""
    export, *paragraphs = _block("## Try it").split("\n\n")
    return export, _steps([*paragraphs, *_block("## Planners").split("\n\n")])


def _block(title: str) -> str:
    section = README.read_text().split(title, 1)[1]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0]


def _steps(paragraphs: list[str]) -> list[Step]:
    steps = []
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        last = max(i for i, line in enumerate(lines) if not line.startswith("#"))
        first = min(i for i, line in enumerate(lines) if not line.startswith("#"))
        command = "\n".join(lines[first : last + 1])
        assert command.count("curl ") == 1, f"one command per paragraph: {paragraph}"
        printed = [line.removeprefix("#").strip() for line in lines[last + 1 :]]
        steps.append(Step(command, "".join(printed)))
    return steps


def pattern(expected: str, rid: str | None) -> re.Pattern[str]:
    escaped = re.escape(expected).replace(re.escape("..."), ".*")
    escaped = escaped.replace(re.escape("<RID>"), re.escape(rid) if rid else "(?P<rid>[0-9a-f]+)")
    return re.compile(escaped, re.DOTALL)


def test_the_readme_walkthrough_prints_what_it_promises(tmp_path: Path) -> None:
    """A newcomer pastes the walk-through right after `make run`. Invariant: every answer
    shows the figures the README prints, a read right after a write included (available 8
    after the receipt, 5 after the hold; 9 on hand, 1 damaged, 8 sellable, web 6 after the
    return): in the embedded mode a write answers only once the read model includes it.
    Then the planner previews a web buffer of 5 (51 SKUs change), saves it, finds it in the
    history and sees the sock in the low-stock report at 3."""
    export, steps = walkthrough()
    assert export.startswith(f"export ATP={README_URL} ")
    assert [s for s in steps if not s.expected] == [], "every step shows what it prints"
    env = service_env(None, str(tmp_path), ATP_ADMIN_TOKEN="dev-admin-token")
    atp("migrate", env=env)
    atp("demo", env=env)
    with running_service(env) as server:
        export = export.replace(README_URL, server.url)
        rid = None
        for step in steps:
            command = step.command.replace("<RID>", rid or "<RID>")
            done = subprocess.run(
                ["bash", "-c", f"set -e\n{export}\n{command}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            found = pattern(step.expected, rid).fullmatch(done.stdout.strip())
            assert found, f"{command}\nREADME: {step.expected}\ngot:    {done.stdout}"
            rid = rid or found.groupdict().get("rid")
        assert rid is not None
