"""Write docs/cli.md from the CLI's own --help texts, so the reference cannot drift from the code.

python scripts/cli_docs.py          # rewrite docs/cli.md
python scripts/cli_docs.py --check  # exit 1 if docs/cli.md is stale (the test suite runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from happyhashtags.cli import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """# CLI reference

Generated from the commands' own `--help` by `scripts/cli_docs.py`; a test fails when this page
and the code disagree. Every option can also be set in the environment or the config file: see
[configuration](configuration.md).
"""


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    found: list[list[str]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        found.append([*prefix, name])
        if isinstance(command, click.Group):
            found.extend(_commands(command, [*prefix, name]))
    return found


def render() -> str:
    runner = CliRunner()
    parts = [HEADER]
    for path in [[], *_commands(cli, [])]:
        result = runner.invoke(
            cli, [*path, "--help"], terminal_width=100, prog_name="happyhashtags"
        )
        if result.exit_code != 0:
            raise SystemExit(f"happyhashtags {' '.join(path)} --help failed: {result.output}")
        title = " ".join(["happyhashtags", *path])
        parts.append(f"\n## `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return "".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is stale: run python scripts/cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
