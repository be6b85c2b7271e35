"""Console examples in the docs are run, and their output compared with what they show.

A block fenced as ```console holds commands after "$ " and the output expected after each;
"*" in the expected output matches anything.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

from tre.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["getting-started.md"]


def console_blocks(page: Path) -> list[list[tuple[str, list[str]]]]:
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.DOTALL):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


@pytest.mark.parametrize("page", PAGES)
def test_console_examples_print_what_the_docs_show(page, environ, capsys):
    blocks = console_blocks(DOCS / page)
    assert blocks, f"{page} has no console examples"
    for steps in blocks:
        for command, expected in steps:
            argv = shlex.split(command)
            assert argv[0] == "tre"
            assert main(argv[1:], environ) == 0, command
            out = capsys.readouterr().out.splitlines()
            assert len(out) == len(expected), (command, out)
            for got, want in zip(out, expected, strict=True):
                assert fnmatch.fnmatchcase(got, want), (command, got, want)
