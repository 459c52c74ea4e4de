"""Docs that cannot drift: every shell command in the README and docs/ runs here, or its page
tags it as not run here with the reason.

A page's ``bash`` blocks run in order, in a fresh folder of their own that holds a small
registry (the session's trained credit and radar models) and ``../shared`` pointing at the real
data, so the commands read as a user types them from the project folder. A block preceded by
``<!-- not run here: <reason> -->`` is counted, not run; a block preceded by
``<!-- file: <path> -->`` is written to that path (the configuration a page shows). Sizes are
the only thing changed (``SIZE_OVERRIDES``: fewer epochs). ``beamline`` commands run in this
process through the console script's own ``main``; ``.venv/bin/python`` runs this Python.
"""

import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from beamline import cli
from models.config import CONFIG_DIR_ENV
from tests.conftest import DATA_DIR

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TAG = re.compile(r"<!--\s*(not run here|file):\s*(.+?)\s*-->")
# A page's sizes are a user's; here they are cut to what shows the command works.
SIZE_OVERRIDES = {("credit", "train"): ["--epochs", "3"]}
# Exit statuses a command documents as an answer, not a failure.
ANSWERS = {"evaluate": {0, 3}, "compare": {0, 4}}


@dataclasses.dataclass
class Block:
    page: str
    line: int
    language: str
    text: str
    tag: tuple[str, str] | None


def blocks(path: pathlib.Path) -> list[Block]:
    """The fenced blocks of a page with the tag on the line before each."""
    found, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        tag = TAG.search(lines[start - 1]) if start else None
        found.append(Block(path.name, start + 1, fence.group(1), "\n".join(body),
                           (tag.group(1), tag.group(2)) if tag else None))
        i += 1
    return found


def commands(text: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_every_bash_block_is_either_run_or_tagged_and_pages_link_their_pictures():
    for page in PAGES:
        for block in blocks(page):
            if block.tag and block.tag[0] == "not run here":
                assert len(block.tag[1]) > 10, f"{page.name}:{block.line}: say why"
        for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / image).exists(), f"{page.name}: {image} is not there"
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.fixture
def doc_folder(tmp_path, monkeypatch, credit_registry, radar_registry):
    """A fresh project-like folder per page: registry, ../shared/data, BEAMLINE_HOME."""

    def make(name: str) -> pathlib.Path:
        base = tmp_path / name
        (base / "shared").mkdir(parents=True)
        (base / "shared" / "data").symlink_to(DATA_DIR)
        work = base / "project"
        for source in (credit_registry, radar_registry):
            shutil.copytree(source, work / "registry", dirs_exist_ok=True)
        return work

    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    monkeypatch.delenv("BEAMLINE_PII_KEY", raising=False)
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    return make


def run_one(command: str, work: pathlib.Path) -> tuple[int, str]:
    words = shlex.split(command, comments=True)
    if words[0] in ("beamline", ".venv/bin/beamline"):
        args = words[1:]
        found, _, _ = cli.find(args[2:] if args[:1] == ["--config_dir"] else args)
        extra = SIZE_OVERRIDES.get(tuple(found), [])
        if extra and extra[0] not in args:
            args += extra
        saved_argv, saved_env = sys.argv, os.environ.get(CONFIG_DIR_ENV)
        try:
            status = cli.main(args)
        except SystemExit as stop:  # argparse's own exits
            status = stop.code if isinstance(stop.code, int) else 2
        finally:
            sys.argv = saved_argv
            if saved_env is None:
                os.environ.pop(CONFIG_DIR_ENV, None)
        accepted = ANSWERS.get(found[-1] if found else "", {0})
        return (0 if status in accepted else status), ""
    if words[0] == ".venv/bin/python":
        done = subprocess.run([sys.executable, *words[1:]], cwd=work, capture_output=True,
                              text=True, timeout=300)
        return done.returncode, done.stderr[-2000:]
    return 127, f"not a beamline or .venv/bin/python command: {words[0]}"


@pytest.mark.slow
def test_every_documented_command_runs_or_is_tagged(doc_folder, monkeypatch, capsys):
    ran, tagged, failures = 0, [], []
    for page in PAGES:
        work = None
        for block in blocks(page):
            if block.language == "bash" and block.tag and block.tag[0] == "not run here":
                tagged += [(page.name, block.tag[1])] * len(commands(block.text))
                continue
            if block.tag and block.tag[0] == "file" or block.language == "bash":
                if work is None:
                    work = doc_folder(page.stem)
                    work.mkdir(parents=True, exist_ok=True)
                    monkeypatch.chdir(work)
            if block.tag and block.tag[0] == "file":
                target = work / block.tag[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.text + "\n")
                continue
            if block.language != "bash":
                continue
            for command in commands(block.text):
                status, detail = run_one(command, work)
                ran += 1
                if status:
                    failures.append(f"{page.name}:{block.line}: exit {status}: {command}\n"
                                    f"{detail}")
    with capsys.disabled():
        print(f"\ndocs: {ran} commands ran, {len(tagged)} tagged not run here "
              f"({len({reason for _, reason in tagged})} reasons)")
    assert not failures, "\n".join(failures)
    assert ran >= 15
