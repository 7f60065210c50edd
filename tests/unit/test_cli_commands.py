"""``podnet COMMAND`` builds only that command's parser (a process imports what its command
needs), and that parser is the one the full ``podnet -h`` parser has for it."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from podnet import cli


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_of_the_full_parser_is_in_the_table_and_nothing_else() -> None:
    assert list(_commands(cli.build_parser())) == list(cli.COMMANDS)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_a_command_alone_parses_as_in_the_full_parser(command: str) -> None:
    alone = _commands(cli.build_parser(command))[command]
    full = _commands(cli.build_parser())[command]
    assert alone.format_help() == full.format_help()


def test_an_unknown_command_gets_the_full_list() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "podnet.cli", "no-such-command"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2 and "invalid choice" in res.stderr and "policy" in res.stderr, res.stderr


def test_the_agent_command_does_not_import_the_lab_or_the_demo() -> None:
    code = (
        "import sys; from podnet import cli; cli.build_parser('agent');"
        "heavy = ('podnet.lab', 'podnet.demo', 'podnet.verify');"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout
