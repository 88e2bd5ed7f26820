"""Every README block marked ``<!-- example: NAME expect="..." -->`` runs against a live
server and prints what it says: Python with the venv's interpreter, JavaScript with node
(as an .mjs module, for top-level await), bash with ``bash -e``. The URL comes from
PROCESSING_URL, which every example reads. A block marked ``server="NAME"`` runs against a
server started with the settings its text names (``SERVERS``), not the shared one."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.server import ROOT, ServerProcess

README = ROOT / "README.md"
MARKER = re.compile(
    r"^<!--\s*example:\s*(?P<name>[\w-]+)(?P<attrs>[^>]*?)\s*-->\s*\n"
    r"```(?P<lang>\w+)\n(?P<code>.*?)\n```",
    re.S | re.M,
)
EXPECT = re.compile(r'expect="((?:[^"\\]|\\.)*)"')
SERVER = re.compile(r'server="([\w-]+)"')
# The servers the README says such examples need: the webhook receiver is on 127.0.0.1.
SERVERS = {"webhooks": {"REMOTE_ALLOW_PRIVATE": "1", "REMOTE_PROTOCOLS": "http,https", "WEBHOOK_SECRET": "s3cret"}}
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
    server: str | None = None


def examples(text: str) -> list[Example]:
    """The marked blocks of ``text``, in order."""
    found = []
    for m in MARKER.finditer(text):
        expect = [e.replace('\\"', '"') for e in EXPECT.findall(m["attrs"])]
        server = SERVER.search(m["attrs"])
        found.append(Example(m["name"], m["lang"], m["code"], expect, server[1] if server else None))
    return found


EXAMPLES = examples(README.read_text())


def test_the_readme_has_every_kind_of_example():
    names = [e.name for e in EXAMPLES]
    assert REQUIRED <= set(names), f"missing: {REQUIRED - set(names)}"
    assert len(names) == len(set(names)), "example names are unique"
    for example in EXAMPLES:
        assert example.lang in RUNNERS, f"{example.name}: no runner for {example.lang}"
        assert example.expect, f"{example.name}: say what it prints with expect=\"...\""
        assert example.server in (None, *SERVERS), f"{example.name}: no server {example.server!r}"


def test_every_marker_is_followed_by_a_code_block():
    markers = re.findall(r"^<!--\s*example:", README.read_text(), re.M)
    assert len(markers) == len(EXAMPLES)


def test_the_extractor_reads_markers_languages_and_expectations():
    text = 'x\n<!-- example: demo expect="a \\"b\\"" expect="c" -->\n```bash\necho hi\n```\n'
    assert examples(text) == [Example("demo", "bash", "echo hi", ['a "b"', "c"])]
    text = '<!-- example: hook server="webhooks" expect="x" -->\n```python\nprint(1)\n```\n'
    assert examples(text)[0].server == "webhooks"


@pytest.fixture(scope="module")
def own_servers(tmp_path_factory: pytest.TempPathFactory):
    """Servers started on first use by the examples that name one, by name."""
    started: dict[str, ServerProcess] = {}

    def get(name: str) -> ServerProcess:
        if name not in started:
            started[name] = ServerProcess(tmp_path_factory.mktemp(f"readme-{name}"), SERVERS[name]).start()
            started[name].wait_workers(2)
        return started[name]
    yield get
    for srv in started.values():
        srv.cleanup()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_against_a_live_server(example, server, own_servers, tmp_path):
    suffix, command = RUNNERS[example.lang]
    extra: dict[str, str] = {}
    if example.server:
        server, extra = own_servers(example.server), SERVERS[example.server]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    script = tmp_path / f"example{suffix}"
    script.write_text(example.code + "\n")
    venv_bin = str(Path(sys.executable).parent)  # the `processing` command
    env = {**os.environ, **extra, "PROCESSING_URL": server.url, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PROCESSING_API_TOKEN", None)
    done = subprocess.run([*command, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    report = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    for expected in example.expect:
        assert expected in done.stdout, f"{expected!r} not printed\n{report}"
    assert "localhost:8001" not in done.stdout + done.stderr, "the example ignored PROCESSING_URL"
