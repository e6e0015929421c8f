"""GTO (iterative/gto) reads our tags: after every step of a lifecycle with rollbacks, `gto show
--json` names the same active (and canary, shadow) version as `modelctl status --json`.

GTO is installed from PyPI into its own virtualenv (it must not share our dependencies). The
registry is cloned after each step; one GTO process then runs `gto show --json` on every clone,
because GTO's start-up (about a second) would otherwise dominate the test.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import git, run_cli
from modelctl.registry import Registry

NAME = "support-agent"
UNREACHABLE = ("Could not find a version", "No matching distribution", "NewConnectionError", "Network is unreachable",
               "Temporary failure in name resolution", "Max retries exceeded", "Connection refused",
               "ProxyError", "timed out")

# Runs inside GTO's virtualenv: `gto show --json -r DIR` for each DIR, through GTO's own CLI.
RUN_GTO = """
import contextlib, io, json, sys
from gto.cli import app
out = {}
for repo in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        app(["show", "--json", "-r", repo], standalone_mode=False)
    out[repo] = json.loads(buf.getvalue())
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def gto_bin(tmp_path_factory):
    """The bin directory of a virtualenv with gto from PyPI (skips only if PyPI is unreachable)."""
    venv = tmp_path_factory.mktemp("gto-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "gto"],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        text = pip.stdout + pip.stderr
        if any(s in text for s in UNREACHABLE):
            pytest.skip(f"PyPI is unreachable, cannot install gto: {text.strip().splitlines()[-1]}")
        pytest.fail(f"pip install gto failed: {text[-2000:]}")
    return venv / "bin"


def _modelctl_view(repo) -> dict:
    proc = run_cli("status", NAME, "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)["models"][0]
    return {"active": m["active"], "canary": (m["canary"] or {}).get("version"),
            "shadow": (m["shadow"] or {}).get("version")}


def _gto_view(doc: dict) -> dict:
    stages = (doc.get(NAME) or {}).get("stage") or {}

    def version(stage):
        value = stages.get(stage)
        return value[1:] if value else None  # GTO names versions as in the tag: v1.0.0

    return {"active": version("active"), "canary": version("canary"), "shadow": version("shadow")}


def test_gto_agrees_with_status_at_every_step(gto_bin, registry, write_bundle, tmp_path):
    reg = Registry(registry)
    for fields in (dict(version="1.0.0"), dict(version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"),
                   dict(version="1.0.2", parent="1.0.1", prompt="prompts/p2.txt", temperature=0.5)):
        reg.register(write_bundle(f"{fields['version']}.yaml", **fields))
    script = [
        ("1.0.0 staging", lambda: reg.promote(NAME, "1.0.0", "staging")),
        ("1.0.0 active", lambda: reg.promote(NAME, "1.0.0", "active")),
        ("1.0.1 staging", lambda: reg.promote(NAME, "1.0.1", "staging")),
        ("1.0.1 shadow 25", lambda: reg.shadow(NAME, "1.0.1", 25)),
        ("1.0.1 canary 5", lambda: reg.canary(NAME, "1.0.1", 5)),
        ("1.0.1 canary 25", lambda: reg.canary(NAME, "1.0.1", 25)),
        ("1.0.1 active", lambda: reg.promote(NAME, "1.0.1", "active")),
        ("rollback 1: active back to 1.0.0", lambda: reg.rollback(NAME, reason="complaints")),
        ("1.0.2 staging", lambda: reg.promote(NAME, "1.0.2", "staging")),
        ("1.0.2 shadow 10", lambda: reg.shadow(NAME, "1.0.2", 10)),
        ("1.0.2 canary 10", lambda: reg.canary(NAME, "1.0.2", 10)),
        ("rollback 2: canary 1.0.2 pulled", lambda: reg.rollback(NAME, reason="error rate", evidence="0.03 vs 0.01")),
        ("1.0.2 canary again, forced", lambda: reg.canary(NAME, "1.0.2", 5, force=True, reason="fixed")),
        ("1.0.2 active", lambda: reg.promote(NAME, "1.0.2", "active")),
        ("rollback 3: active back to 1.0.0 by name", lambda: reg.rollback(NAME, to="1.0.0", reason="again")),
    ]
    steps = [("registered", _modelctl_view(registry), _clone(registry, tmp_path / "step-00"))]
    for i, (label, action) in enumerate(script, 1):
        assert not action().noop, label
        steps.append((label, _modelctl_view(registry), _clone(registry, tmp_path / f"step-{i:02d}")))
    # the state the script should reach, so a test that agrees with itself cannot pass vacuously
    assert steps[8][1] == {"active": "1.0.0", "canary": None, "shadow": None}
    assert steps[11][1] == {"active": "1.0.0", "canary": "1.0.2", "shadow": None}
    assert steps[-1][1] == {"active": "1.0.0", "canary": None, "shadow": None}

    proc = subprocess.run([str(gto_bin / "python"), "-c", RUN_GTO, *[str(s[2]) for s in steps]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)
    for label, ours, clone in steps:
        assert _gto_view(shown[str(clone)]) == ours, label

    # and the real command line, run in the registry itself
    cli = subprocess.run([str(gto_bin / "gto"), "show", "--json"], cwd=registry, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert _gto_view(json.loads(cli.stdout)) == steps[-1][1]
    assert json.loads(cli.stdout)[NAME]["version"] == "v1.0.2"  # GTO's latest registered version


def _clone(repo, dest):
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(dest)], check=True, capture_output=True)
    assert git(dest, "tag", "-l") == git(repo, "tag", "-l")
    return dest
