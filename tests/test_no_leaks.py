"""What grukit ships and shows (library code, report generators, docs, README, ``--help``) names no path of
the machine it was written on and no internal work item: a reader has neither."""

import argparse
import re
from pathlib import Path

import pytest

from grukit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:home|root|tmp|work|srv|mnt)/")
WORK_ITEM = re.compile(r"\bissues?\b|\b(?:task|ticket|work item) #?\d+\b|\bTODO\b", re.IGNORECASE)
TEXT_SUFFIXES = {".py", ".md", ".cpp", ".json", ".toml", ".txt"}


def shipped_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in (ROOT / "src" / "grukit", ROOT / "benchmarks"):
        files += [
            path
            for path in sorted(folder.rglob("*"))
            if path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts and "speed_results" not in path.parts
        ]
    return files


def leaks(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern in (MACHINE_PATH, WORK_ITEM):
            found += [f"line {number}: {hit.group(0)!r} in {line.strip()[:100]!r}" for hit in pattern.finditer(line)]
    return found


def test_the_patterns_catch_what_they_are_for():
    assert leaks("see /work/shared/DATA.md and /home/me/x") and leaks("Issue 4's targets")
    assert leaks("as the issue says")
    assert leaks("done in task 3") and leaks("cache under /tmp/grukit")
    assert not leaks("a run folder such as runs/kjv, e.g. ./tmp/x or ~/work/y; 3 tasks; the tissue")


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_name_no_machine_path_and_no_work_item(path):
    assert leaks(path.read_text(encoding="utf-8")) == [], path.relative_to(ROOT)


def test_every_help_page_names_no_machine_path_and_no_work_item(capsys):
    def commands(parser: argparse.ArgumentParser, path: list[str]):
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, [*path, name])

    pages = 0
    for path in commands(build_parser(), []):
        with pytest.raises(SystemExit) as stop:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert stop.value.code == 0 and out.startswith("usage: grukit")
        assert leaks(out) == [], path
        pages += 1
    assert pages >= 10
