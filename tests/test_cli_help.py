"""Every ``--help`` text renders as written: rich markup eats ``[words]`` (``[torch]``
became an empty string once), so brackets must be escaped in help strings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from rich.text import Text
from typer.testing import CliRunner

from sdmatlas.cli import app

COMMAND = typer.main.get_command(app)


# typer 0.29 carries its own click (typer._click): commands are duck-typed here
def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


def _texts(cmd: Any) -> Iterator[str]:
    for text in (cmd.help, cmd.short_help, getattr(cmd, "epilog", None)):
        if text:
            yield text
    for p in cmd.params:
        if getattr(p, "help", None):
            yield p.help


def _unescaped(text: str) -> str:
    return text.replace("\\[", "[")


def _lookup(path: tuple[str, ...]) -> Any:
    cmd: Any = COMMAND
    for name in path:
        cmd = cmd.commands[name]
    return cmd


ALL = list(_commands(COMMAND))


def test_every_command_is_visited() -> None:
    assert ("demo", "train") in ALL and ("publish",) in ALL and len(ALL) > 10


def test_help_strings_survive_rich_markup() -> None:
    """What rich prints of each help string is the string itself: no bracket eaten,
    no doubled space left behind."""
    bad = []
    for path in ALL:
        for text in _texts(_lookup(path)):
            shown = Text.from_markup(text).plain
            if shown != _unescaped(text) or "  " in re.sub(r"\n\s*", "\n", shown.strip()):
                bad.append(f"{' '.join(path) or 'sdmatlas'}: {text!r} shows as {shown!r}")
    assert not bad, "\n".join(bad)


def test_rendered_help_pages() -> None:
    """Every --help page renders (exit 0), and the one that broke shows its brackets."""
    runner = CliRunner()
    for path in ALL:
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert res.exit_code == 0, (path, res.output)
        if path == ("demo", "train"):
            assert "needs the [torch] extra" in res.output
            assert "the  extra" not in res.output
