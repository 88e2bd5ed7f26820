"""Every README block marked ``<!-- example: NAME expect="..." -->`` runs against a live
server and prints what it says: Python with the venv's interpreter, JavaScript with node
(as an .mjs module, for top-level await), bash with ``bash -e``. The URL comes from
PROCESSING_URL, which every example reads."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.server import ROOT

README = ROOT / "README.md"
MARKER = re.compile(
    r"^<!--\s*example:\s*(?P<name>[\w-]+)(?P<attrs>[^>]*?)\s*-->\s*\n"
    r"```(?P<lang>\w+)\n(?P<code>.*?)\n```",
    re.S | re.M,
)
EXPECT = re.compile(r'expect="((?:[^"\\]|\\.)*)"')
RUNNERS = {
    "python": (".py", [sys.executable]),
    "javascript": (".mjs", ["node"]),
    "bash": (".sh", ["bash", "-e"]),
}
REQUIRED = {"python-requests", "javascript-fetch", "curl", "python-client", "cli"}


class Example(NamedTuple):
    name: str
    lang: str
    code: str
    expect: list[str]


def examples(text: str) -> list[Example]:
    """The marked blocks of ``text``, in order."""
    found = []
    for m in MARKER.finditer(text):
        expect = [e.replace('\\"', '"') for e in EXPECT.findall(m["attrs"])]
        found.append(Example(m["name"], m["lang"], m["code"], expect))
    return found


EXAMPLES = examples(README.read_text())


def test_the_readme_has_every_kind_of_example():
    names = [e.name for e in EXAMPLES]
    assert REQUIRED <= set(names), f"missing: {REQUIRED - set(names)}"
    assert len(names) == len(set(names)), "example names are unique"
    for example in EXAMPLES:
        assert example.lang in RUNNERS, f"{example.name}: no runner for {example.lang}"
        assert example.expect, f"{example.name}: say what it prints with expect=\"...\""


def test_every_marker_is_followed_by_a_code_block():
    markers = re.findall(r"^<!--\s*example:", README.read_text(), re.M)
    assert len(markers) == len(EXAMPLES)


def test_the_extractor_reads_markers_languages_and_expectations():
    text = 'x\n<!-- example: demo expect="a \\"b\\"" expect="c" -->\n```bash\necho hi\n```\n'
    assert examples(text) == [Example("demo", "bash", "echo hi", ['a "b"', "c"])]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_against_a_live_server(example, server, tmp_path):
    suffix, command = RUNNERS[example.lang]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    script = tmp_path / f"example{suffix}"
    script.write_text(example.code + "\n")
    venv_bin = str(Path(sys.executable).parent)  # the `processing` command
    env = {**os.environ, "PROCESSING_URL": server.url, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PROCESSING_API_TOKEN", None)
    done = subprocess.run([*command, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    report = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    for expected in example.expect:
        assert expected in done.stdout, f"{expected!r} not printed\n{report}"
    assert "localhost:8001" not in done.stdout + done.stderr, "the example ignored PROCESSING_URL"
