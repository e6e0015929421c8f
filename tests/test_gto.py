"""GTO (iterative/gto) reads our tags: after every step of a lifecycle with two active rollbacks, a
canary rollback, replaced actives and archived versions, every GTO view (`gto show`, `gto show --vs -1
--av -1`, `gto show NAME`, `gto history`) agrees with modelctl, and `gto assign` accepts a move
modelctl would accept.

GTO is installed from PyPI into its own virtualenv (it must not share our dependencies). The
registry is cloned after each step; one GTO process then runs every view on every clone,
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

# Runs inside GTO's virtualenv: for each repository, each GTO command line (through GTO's own CLI), JSON out.
RUN_GTO = """
import contextlib, io, json, sys
from gto.cli import app
plan = json.loads(sys.argv[1])
out = {}
for repo, commands in plan.items():
    out[repo] = []
    for args in commands:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            app(args + ["-r", repo], standalone_mode=False)
        out[repo].append(json.loads(buf.getvalue()))
print(json.dumps(out))
"""

# `gto assign` at an injected clock: GTO stamps tags with the current time (through scmrepo's pygit2 or dulwich
# backend) and orders events by those stamps, while modelctl's stamps run ahead of the wall clock when it
# writes several tags in one second.
RUN_ASSIGN = """
import sys, time
when = int(sys.argv[1])
time.time = lambda: when
import pygit2
from scmrepo.git.backend import pygit2 as backend
real = backend.Pygit2Backend._get_signature
def at_when(self, name):
    sig = real(self, name)
    return pygit2.Signature(sig.name, sig.email, when, 0)
backend.Pygit2Backend._get_signature = at_when
from gto.cli import app
app(sys.argv[2:], standalone_mode=False)
"""

VIEWS = [["show", "--json"], ["show", "--json", "--vs", "-1", "--av", "-1"], ["show", NAME, "--json"]]


def install_gto(tmp_path_factory):
    """The bin directory of a virtualenv with gto from PyPI (skips only if PyPI is unreachable);
    the session fixture `gto_bin` (conftest.py) calls it once."""
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
    """What modelctl says: the version in each stage, the versions still registered, the latest one."""
    proc = run_cli("status", NAME, "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)["models"][0]
    shown = json.loads(run_cli("show", NAME, "--json", cwd=repo).stdout)["versions"]
    statuses = {v["version"]: v["status"] for v in shown}
    return {"active": {m["active"]} - {None}, "canary": {(m["canary"] or {}).get("version")} - {None},
            "shadow": {(m["shadow"] or {}).get("version")} - {None},
            "staging": {v for v, st in statuses.items() if st == "staging"},
            "registered": {v for v, st in statuses.items() if st != "archived"}}


def _stages(doc: dict) -> dict:
    stages = (doc.get(NAME) or {}).get("stage") or {}
    # GTO names versions as in the tag (v1.0.0) and joins several with ", "
    return {s: {v.strip()[1:] for v in (stages.get(s) or "").split(",") if v.strip()}
            for s in ("active", "canary", "shadow", "staging")}


def _agree(label: str, ours: dict, views: list) -> None:
    default, every, versions = views
    latest, listed = _stages(default), _stages(every)
    for stage in ("active", "canary", "shadow"):
        assert latest[stage] == ours[stage], (label, "gto show", stage)
    # several versions may be in staging: GTO's default view names the latest of them
    assert latest["staging"] <= ours["staging"] and len(latest["staging"]) == min(1, len(ours["staging"])), label
    for stage in ("active", "canary", "shadow", "staging"):
        assert listed[stage] == ours[stage], (label, "gto show --vs -1 --av -1", stage)
    assert {v["version"][1:] for v in versions} == ours["registered"], (label, f"gto show {NAME}")
    newest = max(ours["registered"], key=lambda v: tuple(map(int, v.split("."))), default=None)
    assert default[NAME]["version"] == (f"v{newest}" if newest else None), label


def _run_gto(gto_bin, plan: dict) -> dict:
    proc = subprocess.run([str(gto_bin / "python"), "-c", RUN_GTO, json.dumps(plan)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _stage_tags(repo) -> list[tuple]:
    """Our stage and deregistration tags in tagger-time order as (event, version, stage); a stage tag's
    version is the one registered on the commit it points at."""
    from modelctl.tags import parse

    rows = []
    fmt = "%(refname:strip=2) %(taggerdate:unix) %(*objectname)"
    for line in git(repo, "for-each-ref", f"--format={fmt}", f"refs/tags/{NAME}*").splitlines():
        tag, when, target = line.split()
        rows.append((int(when), parse(tag), target))
    versions = {target: info["version"] for _, info, target in rows if info["kind"] == "registration"}
    out = []
    for _when, info, target in sorted(rows, key=lambda r: r[0]):
        if info["kind"] == "stage":
            out.append(("assignment" if info["assign"] else "unassignment", versions[target], info["stage"]))
        elif info["kind"] == "deregistration":
            out.append(("deregistration", info["version"], None))
    return out


def test_every_gto_view_agrees_with_modelctl_at_every_step(gto_bin, registry, write_bundle, tmp_path):
    reg = Registry(registry)
    for fields in (dict(version="1.0.0"), dict(version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"),
                   dict(version="1.0.2", parent="1.0.1", prompt="prompts/p2.txt", temperature=0.5),
                   dict(version="1.0.3", parent="1.0.2", prompt="prompts/p2.txt", temperature=0.6)):
        reg.register(write_bundle(f"{fields['version']}.yaml", **fields))
    script = [
        ("1.0.0 staging", lambda: reg.promote(NAME, "1.0.0", "staging")),
        ("1.0.0 active", lambda: reg.promote(NAME, "1.0.0", "active")),
        ("1.0.1 staging", lambda: reg.promote(NAME, "1.0.1", "staging")),
        ("1.0.1 shadow 25", lambda: reg.shadow(NAME, "1.0.1", 25)),
        ("1.0.1 canary 5", lambda: reg.canary(NAME, "1.0.1", 5)),
        ("1.0.1 canary 25", lambda: reg.canary(NAME, "1.0.1", 25)),
        ("1.0.1 active, replacing 1.0.0", lambda: reg.promote(NAME, "1.0.1", "active")),
        ("rollback 1: active 1.0.1 out, 1.0.0 back", lambda: reg.rollback(NAME, from_="1.0.1", reason="complaints")),
        ("1.0.2 staging", lambda: reg.promote(NAME, "1.0.2", "staging")),
        ("1.0.3 staging: two in staging", lambda: reg.promote(NAME, "1.0.3", "staging")),
        ("1.0.2 shadow 10", lambda: reg.shadow(NAME, "1.0.2", 10)),
        ("1.0.2 canary 10", lambda: reg.canary(NAME, "1.0.2", 10)),
        ("rollback 2: canary 1.0.2 pulled", lambda: reg.rollback(NAME, reason="error rate", evidence="0.03 vs 0.01")),
        ("1.0.2 canary again, forced", lambda: reg.canary(NAME, "1.0.2", 5, force=True, reason="fixed")),
        ("1.0.2 active, replacing 1.0.0", lambda: reg.promote(NAME, "1.0.2", "active")),
        ("rollback 3: active 1.0.2 out, back to 1.0.0 by name",
         lambda: reg.rollback(NAME, from_="1.0.2", to="1.0.0", reason="again")),
        ("1.0.1 archived", lambda: reg.promote(NAME, "1.0.1", "archived")),
        ("1.0.3 archived out of staging", lambda: reg.promote(NAME, "1.0.3", "archived")),
    ]
    steps = [("registered", _modelctl_view(registry), _clone(registry, tmp_path / "step-00"))]
    for i, (label, action) in enumerate(script, 1):
        assert not action().noop, label
        steps.append((label, _modelctl_view(registry), _clone(registry, tmp_path / f"step-{i:02d}")))
    # the state the script should reach, so a test that agrees with itself cannot pass vacuously
    assert steps[8][1]["active"] == {"1.0.0"} and steps[10][1]["staging"] == {"1.0.2", "1.0.3"}
    assert steps[13][1]["canary"] == set() and steps[15][1]["active"] == {"1.0.2"}
    assert steps[-1][1] == {"active": {"1.0.0"}, "canary": set(), "shadow": set(), "staging": set(),
                            "registered": {"1.0.0", "1.0.2"}}
    assert "support-agent@v1.0.1!" in git(registry, "tag", "-l") and "support-agent@v1.0.3!" in git(registry, "tag", "-l")

    plan = {str(clone): VIEWS for _, _, clone in steps}
    plan[str(registry)] = VIEWS + [["history", NAME, "--json", "--ascending"]]
    shown = _run_gto(gto_bin, plan)
    for label, ours, clone in steps:
        _agree(label, ours, shown[str(clone)])
    # gto history replays exactly our tags, in our order, and ends where modelctl is
    history = [e for e in shown[str(registry)][-1] if e["event"] != "registration"]
    assert [(e["event"], e["version"][1:], e["stage"]) for e in history] == _stage_tags(registry)
    held: dict = {}
    for e in history:
        if e["event"] in ("assignment", "unassignment"):
            held.setdefault(e["stage"], set())
            (held[e["stage"]].add if e["event"] == "assignment" else held[e["stage"]].discard)(e["version"][1:])
    assert {s: held.get(s, set()) for s in ("active", "canary", "shadow", "staging")} == \
        {s: steps[-1][1][s] for s in ("active", "canary", "shadow", "staging")}
    assert {e["version"][1:] for e in history if e["event"] == "deregistration"} == {"1.0.1", "1.0.3"}

    # the real command line, run in the registry itself
    cli = subprocess.run([str(gto_bin / "gto"), "show", "--json", "--vs", "-1", "--av", "-1"], cwd=registry,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert _stages(json.loads(cli.stdout))["active"] == {"1.0.0"}


def test_gto_assign_accepts_a_move_modelctl_would_accept(gto_bin, registry, write_bundle, tmp_path):
    """1.0.2 replaced 1.0.0: modelctl would roll back to 1.0.0, and so does GTO, because 1.0.0 left the stage."""
    reg = Registry(registry)
    reg.register(write_bundle("a.yaml", version="1.0.0"))
    reg.register(write_bundle("b.yaml", version="1.0.2", parent="1.0.0", prompt="prompts/p2.txt"))
    reg.promote(NAME, "1.0.0", "staging")
    reg.promote(NAME, "1.0.0", "active")
    reg.promote(NAME, "1.0.2", "active", force=True, reason="hotfix")
    gto_repo = _clone(registry, tmp_path / "gto")
    # the same move both ways: modelctl in the registry, GTO in a clone
    assert not reg.rollback(NAME, to="1.0.0", reason="back").noop
    last = max(int(t) for t in git(gto_repo, "for-each-ref", "--format=%(taggerdate:unix)", "refs/tags").split())

    def gto_assign(repo):
        return subprocess.run([str(gto_bin / "python"), "-c", RUN_ASSIGN, str(last + 10), "assign", NAME, "--version",
                               "v1.0.0", "--stage", "active", "-r", str(repo)], capture_output=True, text=True,
                              timeout=120)

    assign = gto_assign(gto_repo)
    assert assign.returncode == 0, assign.stdout + assign.stderr
    assert "Created git tag 'support-agent#active#6'" in assign.stdout
    shown = _run_gto(gto_bin, {str(gto_repo): VIEWS[:1], str(registry): VIEWS[:1]})
    assert _stages(shown[str(gto_repo)][0])["active"] == _stages(shown[str(registry)][0])["active"] == {"1.0.0"}
    # and a move modelctl refuses (1.0.0 already active) GTO refuses too
    tags = git(registry, "tag", "-l")
    again = gto_assign(registry)
    assert "Version 'v1.0.0' is already in stage 'active'" in again.stderr
    assert git(registry, "tag", "-l") == tags


def _clone(repo, dest):
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(dest)], check=True, capture_output=True)
    assert git(dest, "tag", "-l") == git(repo, "tag", "-l")
    return dest
