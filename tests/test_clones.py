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


# -- linked worktrees -----------------------------------------------------------------------------

def consistent(tree) -> None:
    """`git status` clean and the index exactly HEAD's tree."""
    assert git(tree, "status", "--porcelain", "--untracked-files=no") == ""
    assert subprocess.run(["git", "diff-index", "--cached", "--quiet", "HEAD"], cwd=tree).returncode == 0


@pytest.mark.parametrize("push", ["--push", "--no-push"])
def test_a_write_from_a_linked_worktree_keeps_every_worktree_consistent(published, tmp_path, push):
    registry, remote = published
    linked = tmp_path / "linked"
    git(registry, "worktree", "add", "-q", "--detach", str(linked))  # main stays checked out in `registry`
    ok(run_cli("promote", "support-agent", "1.1.0", "--to", "active", push, cwd=linked))
    head = git(registry, "rev-parse", "main").strip()
    assert git(registry, "log", "-1", "--format=%s", "main").startswith("modelctl: promote support-agent 1.1.0")
    if push == "--push":
        assert git(remote, "rev-parse", "main").strip() == head
    consistent(registry)
    consistent(linked)
    assert "active: \"1.1.0\"" in (registry / "deployments" / "support-agent.yaml").read_text()
    doc = run_cli("doctor", "--json", "--no-push", cwd=registry)
    assert "staged-revert" not in doc.stdout


def test_a_write_refuses_when_the_worktree_with_the_branch_has_changes_in_the_way(published, tmp_path):
    registry, remote = published
    linked = tmp_path / "linked"
    git(registry, "worktree", "add", "-q", "--detach", str(linked))
    dep = registry / "deployments" / "support-agent.yaml"
    dep.write_text(dep.read_text() + "# a local note\n")
    before, remote_before = repo_state(registry), git(remote, "for-each-ref")
    linked_before = repo_state(linked)
    refused(run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=linked),
            "uncommitted changes", str(registry))
    assert repo_state(registry) == before and repo_state(linked) == linked_before
    assert git(remote, "for-each-ref") == remote_before


def test_doctor_sees_a_staged_revert_in_this_and_other_worktrees(published, tmp_path):
    registry, remote = published
    linked = tmp_path / "linked"
    git(registry, "worktree", "add", "-q", "--detach", str(linked))
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", f"file://{remote}", str(other)], check=True)
    ok(run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=other))
    # what older versions (or a hand-run update-ref) did: move main under the worktree that has it
    git(registry, "fetch", "-q", "origin")
    git(registry, "update-ref", "refs/heads/main", "refs/remotes/origin/main")
    assert git(registry, "diff", "--cached", "--name-only").split() == ["deployments/support-agent.yaml",
                                                                        "rendered/modelctl-support-agent.yaml"]
    for where in (registry, linked):
        proc = run_cli("doctor", "--no-push", cwd=where)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        text = proc.stdout + proc.stderr
        assert "staged revert" in text and "promote support-agent 1.1.0" in text and str(registry) in text
        assert f"git -C {registry} restore --source=HEAD --staged --worktree -- deployments/support-agent.yaml" in text
    git(registry, "restore", "--source=HEAD", "--staged", "--worktree", "--", "deployments/support-agent.yaml")
    assert run_cli("doctor", "--no-push", cwd=registry).returncode == 0


# -- a push that lands after its time limit ------------------------------------------------------

WAIT_HOOK = """#!/bin/sh
# a slow remote: hold the push until the test releases it (bounded, so nothing hangs forever)
touch "{started}"
i=0
while [ ! -e "{release}" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
"""


def slow_hook(bare: Path, hook: str, tmp_path: Path) -> tuple[Path, Path]:
    started, release = tmp_path / "hook-started", tmp_path / "hook-release"
    path = bare / "hooks" / hook
    path.write_text(WAIT_HOOK.format(started=started, release=release))
    path.chmod(0o755)
    return started, release


def test_a_push_whose_post_receive_outlasts_the_timeout_answers_0(published, tmp_path):
    registry, remote = published
    started, release = slow_hook(remote, "post-receive", tmp_path)
    try:
        proc = run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=registry,
                       env={"MODELCTL_PUSH_TIMEOUT": "1"})
    finally:
        release.touch()
    assert started.exists()  # the push did reach the hook and was cut off by the time limit
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("promote support-agent 1.1.0 to active (replaces 1.0.0): commit ")
    head = git(remote, "rev-parse", "main").strip()
    assert git(registry, "rev-parse", "main").strip() == head
    assert git(remote, "log", "-1", "--format=%s", "main").startswith("modelctl: promote support-agent 1.1.0")
    assert_tags_in_history(remote)
    consistent(registry)


@pytest.fixture
def daemon_remote(published, tmp_path):
    """The published registry served by a real git daemon (the server outlives a killed client)."""
    from gitremote import GitDaemon

    registry, remote = published
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(remote), str(served / "r.git")], check=True)
    d = GitDaemon(served)
    git(registry, "remote", "set-url", "origin", d.url("r.git"))
    git(registry, "fetch", "-q", "origin")
    yield registry, served / "r.git"
    d.stop()


def test_a_push_that_lands_after_the_timeout_answers_0(daemon_remote, tmp_path):
    from test_remote import Stopped

    registry, bare = daemon_remote
    started, release = slow_hook(bare, "pre-receive", tmp_path)
    old = git(bare, "rev-parse", "main").strip()
    writer = Stopped(["promote", "support-agent", "1.1.0", "--to", "active", "--push"], registry,
                     point="after-push-timeout", MODELCTL_PUSH_TIMEOUT="1")
    # the client gave up on its push; the server still holds it in pre-receive. Let it land now.
    assert started.exists() and git(bare, "rev-parse", "main").strip() == old
    release.touch()
    for _ in range(600):  # until the server has moved main (an event, bounded)
        if git(bare, "rev-parse", "main").strip() != old:
            break
        subprocess.run(["sleep", "0.05"])
    code, out, err = writer.finish()
    assert code == 0, err
    head = git(bare, "rev-parse", "main").strip()
    assert head != old and git(registry, "rev-parse", "main").strip() == head
    assert git(bare, "log", "-1", "--format=%s", "main").startswith("modelctl: promote support-agent 1.1.0")
    assert_tags_in_history(bare)
    consistent(registry)
    # the re-run a user would make is already done
    again = run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=registry)
    assert again.returncode == 0 and "already" in again.stdout + again.stderr


def test_a_push_that_has_not_landed_by_the_deadline_exits_4_and_the_rerun_is_already_done(daemon_remote, tmp_path):
    registry, bare = daemon_remote
    cfg = registry / "modelctl.yaml"
    cfg.write_text(cfg.read_text().replace("  deadline: 30 ", "  deadline: 3 "))
    git(registry, "commit", "-qam", "a short write deadline")
    git(registry, "push", "-q", "origin", "main")
    started, release = slow_hook(bare, "pre-receive", tmp_path)
    old = git(bare, "rev-parse", "main").strip()
    try:
        proc = run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=registry,
                       env={"MODELCTL_PUSH_TIMEOUT": "1"})
    finally:
        release.touch()
    assert proc.returncode == 4, proc.stderr
    assert "timed out" in proc.stderr and "run the command again" in proc.stderr
    assert git(registry, "rev-parse", "main").strip() == old  # nothing claimed locally
    for _ in range(600):
        if git(bare, "rev-parse", "main").strip() != old:
            break
        subprocess.run(["sleep", "0.05"])
    again = run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=registry)
    assert again.returncode == 0 and "already" in again.stdout + again.stderr, again.stderr
