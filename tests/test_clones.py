"""Repositories as CI jobs, GitOps tools and people clone them (issue 9 §3, §4).

Shallow clones, unborn branches and dangling remote HEADs, no git identity, a closed stdout,
linked worktrees, and a push that lands after its time limit: each against real git, a real bare
remote or a real git daemon.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, bundle_text, git, repo_state, run_cli
from gitremote import assert_tags_in_history, bare_remote, tags


def bundle_file(tmp_path, filename, **fields):
    path = tmp_path / "in" / filename
    path.parent.mkdir(exist_ok=True)
    path.write_text(bundle_text(**fields))
    return path


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def refused(result, *words):
    """Exit 2 with one `error:` line naming each of `words`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def published(registry, tmp_path):
    """A registry with history (three versions, one active, one canary) pushed to a bare remote."""
    remote = tmp_path / "remote.git"
    bare_remote(registry, remote)
    from modelctl import Registry

    reg = Registry(registry)
    for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"]):
        f = bundle_file(tmp_path, f"b{i}.yaml", version=v, parent=None if i == 0 else ["1.0.0", "1.1.0"][i - 1],
                        model_id=f"gpt-4.1-mini-2025-0{i + 4}-14")
        reg.register(f, push=True)
    for stage in ("staging", "active"):
        reg.promote("support-agent", "1.0.0", stage, push=True)
    for stage in ("staging", "shadow"):
        reg.promote("support-agent", "1.1.0", stage, push=True) if stage == "staging" else \
            reg.shadow("support-agent", "1.1.0", 10, push=True)
    reg.canary("support-agent", "1.1.0", 5, push=True)
    return registry, remote


# -- shallow clones ----------------------------------------------------------------------------

@pytest.fixture
def shallow(published, tmp_path):
    registry, remote = published
    dest = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{remote}", str(dest)], check=True)
    assert git(dest, "rev-parse", "--is-shallow-repository").strip() == "true"
    return dest, remote


@pytest.mark.parametrize("args", [
    ["log", "support-agent"],
    ["which", "support-agent", "--at", "2026-01-01T00:00:00Z"],
    ["doctor", "--fix"],
    ["doctor", "--fix", "--push"],
    ["promote", "support-agent", "1.2.0", "--to", "staging", "--no-push"],
])
def test_a_shallow_clone_refuses_what_needs_history(shallow, args):
    dest, remote = shallow
    before, remote_before = repo_state(dest), git(remote, "for-each-ref")
    refused(run_cli(*args, cwd=dest), "shallow", "git fetch --unshallow")
    assert repo_state(dest) == before and git(remote, "for-each-ref") == remote_before


def test_doctor_fix_in_a_shallow_clone_never_tags_the_boundary_commit(shallow):
    dest, remote = shallow
    boundary = git(dest, "rev-parse", "HEAD").strip()
    # the registration commits lie beyond the boundary: a clone with depth 1 lacks their tags,
    # and the boundary commit looks as if it added every bundle
    assert "support-agent@v1.0.0" not in tags(dest)
    before = repo_state(dest)
    refused(run_cli("doctor", "--fix", "--no-push", cwd=dest), "shallow")
    assert repo_state(dest) == before
    assert boundary not in tags(dest).values()
    # with the whole history the same command rebuilds a missing tag on the commit that added the bundle
    git(dest, "fetch", "-q", "--unshallow", "--tags")
    git(dest, "tag", "-d", "support-agent@v1.0.0")
    ok(run_cli("doctor", "--fix", "--no-push", cwd=dest))
    assert tags(dest)["support-agent@v1.0.0"] == tags(remote)["support-agent@v1.0.0"]


def test_pushed_writes_from_a_shallow_clone_land_with_the_right_tags(shallow, tmp_path):
    dest, remote = shallow
    remote_tags = tags(remote)
    ok(run_cli("canary", "support-agent", "1.1.0", "--pct", "10", "--push", cwd=dest))
    f = bundle_file(tmp_path, "b3.yaml", version="1.3.0", parent="1.2.0", model_id="gpt-4.1-mini-2025-07-14")
    ok(run_cli("register", f, "--push", cwd=dest))
    ok(run_cli("promote", "support-agent", "1.3.0", "--to", "staging", "--push", cwd=dest))
    new = {n: c for n, c in tags(remote).items() if n not in remote_tags}
    counters = sorted(int(n.rsplit("#", 1)[1]) for n in remote_tags if "#" in n)
    assert sorted(n for n in new if "#" in n) == sorted([
        f"support-agent#canary#{counters[-1] + 1}", f"support-agent#staging#{counters[-1] + 2}"])
    # stage tags sit on the registration commits, never on the shallow boundary
    assert new[f"support-agent#canary#{counters[-1] + 1}"] == remote_tags["support-agent@v1.1.0"]
    added = git(remote, "log", "-1", "--format=%H", "main", "--", "bundles/support-agent/1.3.0.yaml").strip()
    assert new["support-agent@v1.3.0"] == added
    assert_tags_in_history(remote)


# -- unborn branches, dangling remote HEAD, no identity -----------------------------------------

def test_a_clone_of_an_empty_remote_says_so(tmp_path):
    empty = tmp_path / "empty.git"
    git(tmp_path, "init", "-q", "--bare", str(empty))
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", f"file://{empty}", str(dest)], check=True, capture_output=True)
    line = refused(run_cli("status", cwd=dest), "no commits", "unborn", "empty")
    assert "run 'modelctl init' first" not in line


def test_a_repository_without_commits_says_so(tmp_path):
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "--initial-branch=main", str(repo))
    line = refused(run_cli("show", "support-agent", cwd=repo), "no commits yet", "'main' is unborn")
    assert "first" not in line


def test_a_dangling_remote_head_is_named(published, tmp_path):
    registry, remote = published
    git(remote, "symbolic-ref", "HEAD", "refs/heads/trunk")  # the remote's HEAD names a branch it lacks
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", f"file://{remote}", str(dest)], check=True, capture_output=True)
    refused(run_cli("status", cwd=dest), "'trunk' has no commits", "dangling", "git checkout main")


@pytest.fixture
def no_identity(tmp_path, monkeypatch):
    """No user.name/user.email anywhere, no GIT_* identity, and git told not to guess one."""
    home = tmp_path / "nohome"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(key, raising=False)


def test_init_without_identity_creates_nothing(tmp_path, no_identity):
    target = tmp_path / "new-registry"
    refused(run_cli("init", target, cwd=tmp_path), "identity", 'git config user.name "', "git config user.email")
    assert not target.exists()
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    refused(run_cli("init", empty, cwd=tmp_path), "identity")
    assert list(empty.iterdir()) == []  # no .git left behind


def test_register_without_identity_writes_nothing(registry, tmp_path, monkeypatch):
    f = bundle_file(tmp_path, "b.yaml")
    before = repo_state(registry)
    home = tmp_path / "nohome"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    env = {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(home / ".gitconfig")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_AUTHOR", "GIT_COMMITTER"))}
    clean.update(env, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "modelctl", "register", str(f)], cwd=registry, env=clean,
                          capture_output=True, text=True)
    refused(proc, "identity", "git config user.name")
    assert repo_state(registry) == before


# -- a closed stdout ------------------------------------------------------------------------------

def run_closed_stdout(args, cwd, env=None):
    """Run modelctl with a stdout pipe whose reader is already gone (what `| head -1` leads to)."""
    r, w = os.pipe()
    os.close(r)
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    try:
        proc = subprocess.run([sys.executable, "-m", "modelctl", *map(str, args)], cwd=cwd, stdout=w,
                              stderr=subprocess.PIPE, text=True, env=full_env, timeout=120)
    finally:
        os.close(w)
    return proc


@pytest.mark.parametrize("args", [["log", "support-agent"], ["status"], ["show", "support-agent", "--json"],
                                  ["check"]])
def test_reads_into_a_closed_pipe_exit_0_quietly(published, args):
    registry, _ = published
    proc = run_closed_stdout(args, registry)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_rollback_into_a_closed_pipe_lands_and_exits_0(published):
    registry, remote = published
    proc = run_closed_stdout(["rollback", "support-agent", "--push", "--reason", "p95"], registry)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert git(remote, "log", "-1", "--format=%s", "main").startswith("modelctl: rollback support-agent")
    assert "canary: null" in git(remote, "show", "main:deployments/support-agent.yaml")


def test_log_piped_to_head_exits_0(published):
    registry, _ = published
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", "-c", f"'{sys.executable}' -m modelctl log support-agent | head -1; "
                                         "exit ${PIPESTATUS[0]}"], cwd=registry, env=env, capture_output=True,
                          text=True)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert len(proc.stdout.splitlines()) == 1
