"""`securefed --help` and every subcommand's --help: a description for a user and an example."""

from __future__ import annotations

import argparse

import pytest

from securefed.cli import _parser, main


def _commands(
    parser: argparse.ArgumentParser, path: str = ""
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                command = f"{path} {name}".strip()
                found.append((command, sub))
                found += _commands(sub, command)
    return found


def test_the_top_level_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "securefed trains models across banks without pooling their records" in text
    assert "``" not in text  # no reStructuredText from a developer docstring
    assert "examples:\n  securefed demo" in text
    assert "securefed run --config run.toml --dry-run" in text


def test_every_subcommand_has_a_description_and_an_example() -> None:
    commands = _commands(_parser())
    assert len(commands) > 30
    for command, parser in commands:
        assert parser.description, command
        assert parser.epilog is not None, command
        assert parser.epilog.startswith("example:\n  securefed "), command
        assert parser.formatter_class is argparse.RawDescriptionHelpFormatter, command
        name = command.split()[0]
        assert parser.epilog.split("\n", 1)[1].strip().split()[1] == name, command


@pytest.mark.parametrize(
    "argv", [["audit", "verify"], ["run"], ["demo"], ["audit", "report"], ["bench", "dp"]]
)
def test_subcommand_help_shows_its_description_and_example(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = capsys.readouterr().out
    assert "\nexample:\n  securefed " in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_verify_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--help"])
    text = capsys.readouterr().out
    for code, status in [
        (0, "INTACT"),
        (1, "TAMPERED"),
        (3, "INCOMPLETE"),
        (4, "EQUIVOCATED"),
        (5, "ROSTER_MISMATCH"),
        (6, "EPSILON_UNDERSTATED"),
        (7, "OVER_BUDGET"),
    ]:
        assert f"  {code}  {status}" in text
    assert "--json" in text
