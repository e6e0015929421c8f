"""The README's examples run as shown: its files are written, its ```console commands run in order against
the real CLI in a temporary directory, and each command's exit code and output match what the README shows
(commit ids, the directory and times aside)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
SHOWN_DIR = "/tmp/rd"  # where the README's walkthrough says it runs


def files_shown(text: str) -> dict[str, str]:
    """`<!-- file: NAME -->` followed by a fenced block: the file the README asks the reader to save."""
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S)}


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """Every ```console block in order: (command after '$ ', the output lines shown under it)."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
    return steps


def normalize(line: str, workdir: str) -> str:
    line = line.replace(workdir, SHOWN_DIR)
    line = re.sub(r"\b[0-9a-f]{12}\b", "<commit>", line)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", line)


@pytest.fixture
def cli_on_path(tmp_path) -> dict:
    """PATH with the real `modelctl` of this source tree, as `pip install .` would put it there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "modelctl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m modelctl "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("COLUMNS", None)
    return env


def test_readme_examples_run_as_shown(tmp_path, cli_on_path):
    text = README.read_text()
    work = tmp_path / "rd"
    work.mkdir()
    files = files_shown(text)
    assert {"support-agent-2.4.0.yaml", "support-agent-next.yaml", "eval-2.4.0.yaml"} <= set(files)
    for name, content in files.items():
        (work / name).write_text(content)
    steps = console_steps(text)
    assert len(steps) >= 15
    cwd, rc = work, 0
    for command, shown in steps:
        # one shell per command, as a reader types them: `cd` carries over, so does `$?`
        script = f"(exit {rc})\n{command}\nstatus=$?\npwd > {tmp_path}/.cwd\nexit $status\n"
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=cli_on_path, capture_output=True, text=True,
                              timeout=120)
        cwd, rc = Path((tmp_path / ".cwd").read_text().strip()), proc.returncode
        fails = any(line.startswith("error: ") for line in shown)
        assert (rc != 0) == fails, (command, rc, proc.stdout, proc.stderr)
        lines = proc.stdout.rstrip("\n").splitlines() + proc.stderr.rstrip("\n").splitlines()
        got = [normalize(line, str(work)) for line in lines]
        want = [normalize(line, str(work)) for line in shown]
        # stdout and stderr interleave on a terminal: compare the lines, not their order across streams
        assert sorted(got) == sorted(want), (command, proc.stdout, proc.stderr)


def test_readme_points_at_documents_users_can_see():
    text = README.read_text()
    assert "design document" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    assert "(docs/reference.md)" in text


def test_ci_runs_the_readmes_test_command_in_a_fresh_virtualenv():
    text = README.read_text()
    quick_start = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    command = quick_start[1].split("#")[0].strip()
    assert command == "bash scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == command
    assert any(line.startswith("python3 -m venv ") for line in ci)
    assert any(line.startswith(". ") and line.endswith('/bin/activate"') for line in ci)
