"""The docs stay true to the code: the CLI reference is generated and checked, examples run."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from happyhashtags.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _all_commands(
    group: click.Group, prefix: str = "happyhashtags"
) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, f"{prefix} {name}"))
    return found


def test_cli_reference_matches_the_commands_help() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "command"), _all_commands(cli), ids=lambda v: str(v))
def test_every_command_has_help_and_is_in_the_docs(name: str, command: click.Command) -> None:
    assert (command.help or "").strip(), f"{name} has no --help text"
    assert f"## `{name}`" in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_what_counts_examples_run() -> None:
    failures, tried = doctest.testfile(
        str(ROOT / "docs" / "what-counts.md"), module_relative=False, optionflags=doctest.ELLIPSIS
    )
    assert tried > 0
    assert failures == 0


def test_readme_links_point_at_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert missing == []


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme
    assert "make test" in readme
