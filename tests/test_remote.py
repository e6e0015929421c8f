"""A shared remote (DESIGN §4): atomic compare-and-swap writes over file:// and git://, races,
refusals, an unreachable remote, one clone used by two processes.

Races are made deterministic without sleeping: `MODELCTL_FAULT=before-push:stop` makes a writer
stop itself (SIGSTOP) after it planned on the remote tip and before it pushes; the test waits for
the stop with waitpid(WUNTRACED), lets another writer land, then continues the first one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import weakref

import pytest
from conftest import ROOT, bundle_text, git, repo_state, run_cli
from gitremote import (
    GitDaemon,
    assert_tags_in_history,
    bare_remote,
    clone,
    commits,
    env_with,
    free_port,
    index_consistent,
    leftovers,
    tags,
)

# -- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture
def remote(registry, tmp_path):
    """The registry published to a bare repository over file://; the registry is a clone of it."""
    path = tmp_path / "remote.git"
    bare_remote(registry, path)
    return path


@pytest.fixture
def daemon(tmp_path):
    """A git daemon on a free 127.0.0.1 port serving tmp_path/served, receive-pack enabled."""
    (tmp_path / "served").mkdir()
    d = GitDaemon(tmp_path / "served")
    yield d
    d.stop()


@pytest.fixture
def daemon_clones(registry, daemon, tmp_path):
    """Two clones (a, b) of the registry served by git daemon, and the bare repository behind it."""
    served = tmp_path / "served" / "registry.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(registry), str(served)], check=True)
    url = daemon.url("registry.git")
    return clone(url, tmp_path / "a"), clone(url, tmp_path / "b"), served


def bundle_file(tmp_path, filename, **fields):
    path = tmp_path / "in" / filename
    path.parent.mkdir(exist_ok=True)
    path.write_text(bundle_text(**fields))
    return path


class Stopped:
    """A modelctl process that stops itself at a fault point; the test continues it when it likes."""

    def __init__(self, args, cwd, point="before-push", **env):
        self.proc = subprocess.Popen([sys.executable, "-m", "modelctl", *map(str, args)], cwd=cwd,
                                     env=env_with(PYTHONPATH=ROOT, MODELCTL_FAULT=f"{point}:stop", **env),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stops = 0
        self.returncode = None
        weakref.finalize(self, _reap, self.proc)  # a failing test must not leave a stopped writer behind
        assert self._wait(), "the writer exited before reaching its stop point"

    def _wait(self) -> bool:
        _, status = os.waitpid(self.proc.pid, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            self.stops += 1
            return True
        self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
        return False

    def finish(self) -> tuple[int, str, str]:
        """Continue it (again at every stop) until it exits; returncode, stdout, stderr."""
        while True:
            os.kill(self.proc.pid, signal.SIGCONT)
            if not self._wait():
                break
        out, err = self.proc.communicate(timeout=60)
        return self.returncode, out, err


def _reap(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
            proc.communicate(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass


def remote_register_commits(repo, version, model="support-agent"):
    return [c for c in commits(repo) if c["trailers"].get("Modelctl-Action") == "register"
            and c["trailers"].get("Modelctl-Model") == model and c["trailers"].get("Modelctl-Version") == version]


# -- the write path --------------------------------------------------------------------------

def test_push_lands_commit_and_tag_together_and_the_checkout_follows(registry, remote, write_bundle):
    proc = run_cli("register", write_bundle(version="1.0.0"), "--push", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "(pushed)" in proc.stdout
    head = git(remote, "rev-parse", "main").strip()
    assert git(remote, "log", "-1", "--format=%s", "main").strip() == "modelctl: register support-agent 1.0.0"
    assert tags(remote) == {"support-agent@v1.0.0": head}
    # the clone is exactly where the remote is: branch, remote-tracking ref, tag, clean work tree
    assert git(registry, "rev-parse", "main", "origin/main").split() == [head, head]
    assert tags(registry) == tags(remote)
    assert (registry / "bundles/support-agent/1.0.0.yaml").exists()
    assert index_consistent(registry) and git(registry, "status", "--porcelain") == ""
    assert leftovers(registry) == []


def test_racing_writer_replans_on_the_new_tip_over_git_daemon(daemon_clones, tmp_path):
    a, b, served = daemon_clones
    first = Stopped(["register", bundle_file(tmp_path, "a.yaml", version="1.0.0"), "--push", "--json"], a)
    proc = run_cli("register", bundle_file(tmp_path, "b.yaml", version="2.0.0", temperature=0.5), "--push", cwd=b)
    assert proc.returncode == 0, proc.stderr
    code, out, err = first.finish()
    assert code == 0, err
    # the first push was refused (non-fast-forward), so it planned again on b's commit and pushed once more
    assert first.stops == 2 and json.loads(out)["attempts"] == 2
    log = commits(served)
    assert [c["subject"] for c in log[-2:]] == ["modelctl: register support-agent 2.0.0",
                                                 "modelctl: register support-agent 1.0.0"]
    assert git(served, "rev-parse", "main^").strip() == log[-2]["sha"]
    dep = git(served, "show", "main:deployments/support-agent.yaml")
    assert "versions: {}" in dep  # both registered: implicit, from their bundles (README "Many versions")
    assert git(served, "ls-tree", "--name-only", "main", "bundles/support-agent/").split() == [
        "bundles/support-agent/1.0.0.yaml", "bundles/support-agent/2.0.0.yaml"]
    assert set(tags(served)) == {"support-agent@v1.0.0", "support-agent@v2.0.0"}
    assert_tags_in_history(served)
    assert git(a, "rev-parse", "main").strip() == log[-1]["sha"] and index_consistent(a)


def test_the_same_bundle_registered_twice_at_once_lands_once(daemon_clones, tmp_path):
    a, b, served = daemon_clones
    f = bundle_file(tmp_path, "same.yaml", version="1.0.0")
    first = Stopped(["register", f, "--push"], a)
    # another date: two writers in the same second would otherwise build the very same commit
    stamp = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    assert run_cli("register", f, "--push", cwd=b, env=stamp).returncode == 0
    code, out, err = first.finish()
    assert code == 0, err
    assert out.startswith("already done: support-agent 1.0.0 is already registered with this bundle")
    assert first.stops == 1  # the re-plan found it done: no second push
    assert len(remote_register_commits(served, "1.0.0")) == 1
    assert list(tags(served)) == ["support-agent@v1.0.0"]
    # the clone that lost the race caught up with the remote
    assert git(a, "rev-parse", "main").strip() == git(served, "rev-parse", "main").strip()
    assert (a / "bundles/support-agent/1.0.0.yaml").exists() and index_consistent(a)


def test_a_different_bundle_under_a_taken_version_is_refused_after_the_race(daemon_clones, tmp_path):
    a, b, served = daemon_clones
    first = Stopped(["register", bundle_file(tmp_path, "x.yaml", version="1.0.0"), "--push"], a)
    assert run_cli("register", bundle_file(tmp_path, "y.yaml", version="1.0.0", temperature=0.9), "--push",
                   cwd=b).returncode == 0
    before = git(served, "for-each-ref")
    code, _, err = first.finish()
    assert code == 2 and "exists; registered bundles are immutable" in err
    assert git(served, "for-each-ref") == before
    assert leftovers(a) == []


def test_retries_stop_at_the_deadline_with_exit_3_and_nothing_written(registry, remote, tmp_path):
    from modelctl.errors import Conflict
    from modelctl.store import Plan, Store

    rival = clone("file://" + str(remote), tmp_path / "rival")
    clock = {"now": 1_700_000_000.0}
    seen = []

    def plan(snap):
        # another writer lands between our fetch and our push, every time
        seen.append(snap.commit)
        git(rival, "pull", "-q", "--ff-only")
        (rival / f"notes-{len(seen)}.txt").write_text("x\n")
        git(rival, "add", ".")
        git(rival, "commit", "-q", "-m", f"rival {len(seen)}")
        git(rival, "push", "-q", "origin", "main")
        return Plan(files={"mine.txt": b"mine\n"}, subject="modelctl: mine")

    def sleep(seconds):
        clock["now"] += seconds

    before = repo_state(registry)
    with pytest.raises(Conflict) as err:
        Store(registry).transact(plan, push=True, branch="main", deadline=5, sleep=sleep, clock=lambda: clock["now"])
    assert err.value.exit_code == 3 and "gave up after" in str(err.value)
    assert len(seen) >= 3 and len(set(seen)) == len(seen)  # each attempt planned on a fresh remote tip
    assert "mine.txt" not in git(remote, "ls-tree", "--name-only", "main").split()
    after = repo_state(registry)
    assert after["files"] == before["files"] and after["status"] == before["status"]
    assert git(registry, "rev-parse", "main").strip() == before["head"].strip()
    assert leftovers(registry) == []


def test_branch_flow_pushes_a_review_branch_without_tags(registry, remote, write_bundle):
    f = write_bundle(version="1.0.0")
    proc = run_cli("register", f, "--push", "--branch", "review/sa-1.0.0", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert git(remote, "log", "-1", "--format=%s", "review/sa-1.0.0").strip() == \
        "modelctl: register support-agent 1.0.0"
    assert tags(remote) == {} and git(remote, "rev-parse", "main") == git(registry, "rev-parse", "main")
    again = run_cli("register", f, "--push", "--branch", "review/sa-1.0.0", cwd=registry)
    assert again.returncode == 2 and "already exists" in again.stderr


# -- refusals and failures -------------------------------------------------------------------

def _hook(remote, name, body, tmp_path):
    counter = tmp_path / f"{name}.calls"
    hook = remote / "hooks" / name
    hook.write_text(f"#!/bin/sh\necho call >> '{counter}'\n{body}\n")
    hook.chmod(0o755)
    return counter


@pytest.mark.parametrize("hook, body, said", [
    ("pre-receive", 'echo "policy: registry changes need a ticket id" >&2; exit 1',
     "pre-receive hook declined): policy: registry changes need a ticket id"),
    ("update", 'case "$1" in refs/tags/*) echo "tags are made by the release bot" >&2; exit 1;; esac',
     "hook declined): tags are made by the release bot"),
])
def test_a_hook_refusal_exits_4_once_and_leaves_nothing(registry, remote, write_bundle, tmp_path, hook, body, said):
    calls = _hook(remote, hook, body, tmp_path)
    before_remote = git(remote, "for-each-ref")
    before = repo_state(registry)
    proc = run_cli("register", write_bundle(version="1.0.0"), "--push", cwd=registry)
    assert proc.returncode == 4
    assert proc.stderr.startswith("error: the remote refused the push (") and said in proc.stderr
    assert "nothing was written" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert calls.read_text().count("call") == (1 if hook == "pre-receive" else 2)  # one push, no retry storm
    assert git(remote, "for-each-ref") == before_remote
    assert repo_state(registry) == before and leftovers(registry) == []


def test_an_unreachable_remote_exits_4_and_changes_nothing(registry, remote, write_bundle):
    git(registry, "remote", "set-url", "origin", f"git://127.0.0.1:{free_port()}/registry.git")
    before = repo_state(registry)
    proc = run_cli("register", write_bundle(version="1.0.0"), "--push", cwd=registry)
    assert proc.returncode == 4
    assert proc.stderr.startswith("error: cannot fetch from remote 'origin'") and "--no-push" in proc.stderr
    assert repo_state(registry) == before and leftovers(registry) == []
    doctor = run_cli("doctor", "--push", cwd=registry)
    assert doctor.returncode == 4 and "cannot fetch from remote 'origin'" in doctor.stdout


def test_a_remote_without_the_branch_is_explained_and_doctor_publishes_it(registry, tmp_path, write_bundle):
    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", str(empty)], check=True)
    git(registry, "remote", "add", "origin", "file://" + str(empty))
    proc = run_cli("register", write_bundle(version="1.0.0"), "--push", cwd=registry)
    assert proc.returncode == 2 and "remote 'origin' has no branch 'main'" in proc.stderr
    doctor = run_cli("doctor", "--push", cwd=registry)
    assert doctor.returncode == 1 and "the remote has no branch 'main'" in doctor.stdout
    fixed = run_cli("doctor", "--push", "--fix", cwd=registry)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert git(empty, "rev-parse", "main") == git(registry, "rev-parse", "main")
    assert run_cli("register", write_bundle(version="1.0.0"), "--push", cwd=registry).returncode == 0
    assert list(tags(empty)) == ["support-agent@v1.0.0"]


# -- the local checkout ----------------------------------------------------------------------

def test_a_checkout_with_changes_in_the_way_is_left_alone(registry, remote, tmp_path):
    other = clone("file://" + str(remote), tmp_path / "other")
    assert run_cli("register", bundle_file(tmp_path, "x.yaml", name="x", version="1.0.0"), "--push",
                   cwd=other).returncode == 0
    # this clone is behind and has its own uncommitted edit of the file the other writer changed
    git(registry, "pull", "-q", "--ff-only")
    assert run_cli("promote", "x", "1.0.0", "--to", "staging", "--push", cwd=other).returncode == 0
    mine = registry / "deployments/x.yaml"
    mine.write_text(mine.read_text() + "# my note\n")
    local_before = git(registry, "rev-parse", "main")
    proc = run_cli("register", bundle_file(tmp_path, "y.yaml", name="y", version="1.0.0"), "--push", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "left as it was" in proc.stderr
    assert remote_register_commits(remote, "1.0.0", "y")  # the write landed
    assert git(registry, "rev-parse", "main") == local_before and mine.read_text().endswith("# my note\n")
    assert git(registry, "rev-parse", "origin/main") == git(remote, "rev-parse", "main")
    doctor = run_cli("doctor", "--push", cwd=registry)
    assert doctor.returncode == 0 and "behind origin/main" in doctor.stdout


def test_unrelated_local_edits_survive_a_pushed_write(registry, remote, tmp_path):
    note = registry / "prompts/p2.txt"
    note.write_text("edited locally, not committed\n")
    other = clone("file://" + str(remote), tmp_path / "other")
    assert run_cli("register", bundle_file(tmp_path, "x.yaml", name="x", version="1.0.0"), "--push",
                   cwd=other).returncode == 0
    proc = run_cli("register", bundle_file(tmp_path, "y.yaml", name="y", version="1.0.0"), "--push", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert git(registry, "rev-parse", "main") == git(remote, "rev-parse", "main")
    assert (registry / "bundles/x/1.0.0.yaml").exists() and (registry / "bundles/y/1.0.0.yaml").exists()
    assert note.read_text() == "edited locally, not committed\n"
    assert git(registry, "status", "--porcelain").split() == ["M", "prompts/p2.txt"]


# -- one clone, two processes ----------------------------------------------------------------

def test_a_second_process_waits_for_the_lock_and_says_who_holds_it(registry, remote, tmp_path):
    holder = Stopped(["register", bundle_file(tmp_path, "a.yaml", name="a", version="1.0.0"), "--push"], registry)
    before = repo_state(registry)
    waiter = run_cli("register", bundle_file(tmp_path, "b.yaml", name="b", version="1.0.0"), "--push", cwd=registry,
                     env={"MODELCTL_LOCK_TIMEOUT": "0.3"})
    assert waiter.returncode == 3
    assert f"another modelctl process (pid {holder.proc.pid}, writing for" in waiter.stderr
    assert "waited 0.3s for its lock (MODELCTL_LOCK_TIMEOUT)" in waiter.stderr
    assert repo_state(registry) == before
    code, _, err = holder.finish()
    assert code == 0, err
    assert run_cli("register", bundle_file(tmp_path, "b.yaml", name="b", version="1.0.0"), "--push",
                   cwd=registry).returncode == 0
    assert [c["trailers"]["Modelctl-Model"] for c in commits(remote)[-2:]] == ["a", "b"]


def test_by_default_a_waiter_outlasts_a_holder_still_within_its_push_deadline(registry, monkeypatch):
    # a writer keeps the lock while it retries its push for up to remote.deadline seconds; a
    # waiter that gave up sooner would fail although the holder is behaving (seen with 8 writers)
    from modelctl.store import Store

    monkeypatch.delenv("MODELCTL_LOCK_TIMEOUT", raising=False)
    assert Store(registry).lock(holds=120).timeout == 180
    assert Store(registry).lock().timeout == 60
    monkeypatch.setenv("MODELCTL_LOCK_TIMEOUT", "5")  # an explicit setting is taken as it is
    assert Store(registry).lock(holds=120).timeout == 5
    assert index_consistent(registry) and leftovers(registry) == []


def test_concurrent_writers_in_one_clone_are_serialized(registry, remote, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "modelctl", "register",
                               str(bundle_file(tmp_path, f"m{i}.yaml", name=f"m{i}", version="1.0.0")), "--push"],
                              cwd=registry, env=env_with(PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), results
    landed = sorted(c["trailers"]["Modelctl-Model"] for c in commits(remote) if c["trailers"].get("Modelctl-Model"))
    assert landed == ["m0", "m1", "m2", "m3"]
    assert git(registry, "rev-parse", "main") == git(remote, "rev-parse", "main")
    assert index_consistent(registry) and git(registry, "status", "--porcelain") == ""
    assert leftovers(registry) == []


# -- pure parts ------------------------------------------------------------------------------

def test_backoff_is_capped_exponential_with_full_jitter():
    from modelctl.store import backoff

    assert backoff(1, 0.0) == pytest.approx(0.01) and backoff(1, 0.999) < 0.12
    assert backoff(3, 0.999) < backoff(4, 0.999) < backoff(5, 0.999)
    assert max(backoff(n, 0.999) for n in range(1, 50)) <= 1.51
    # the window is measured in attempts: slower attempts, proportionally wider spread
    assert backoff(1, 0.5, unit=0.4) == pytest.approx(0.01 + 4 * (backoff(1, 0.5, unit=0.1) - 0.01))


@pytest.mark.parametrize("stdout, verdict", [
    ("!\tHEAD:refs/heads/main\t[rejected] (non-fast-forward)\n", "retry"),
    ("!\tHEAD:refs/heads/main\t[rejected] (atomic push failed)\n!\trefs/tags/t:refs/tags/t\t[rejected] (already exists)\n",
     "retry"),
    ("!\tx:refs/heads/main\t[remote rejected] (failed to update ref)\n", "retry"),
    ("!\tx:refs/heads/main\t[remote rejected] (atomic transaction failed)\n"
     "!\tt:refs/tags/t\t[remote rejected] (atomic transaction failed)\n", "retry"),
    ("!\tx:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n", "refused"),
    ("!\tx:refs/heads/main\t[remote rejected] (atomic push failure)\n!\tt:refs/tags/t\t[remote rejected] (hook declined)\n",
     "refused"),
    ("", "error"),
])
def test_push_outcomes_are_classified(stdout, verdict):
    from modelctl.store import classify_push

    assert classify_push(stdout, "")[0] == verdict


# -- racing rollbacks (DESIGN §4: one rollback commit, the second says who did it) ------------

@pytest.fixture
def canary_clones(registry, daemon, write_bundle, tmp_path):
    """support-agent 1.0.0 active and 1.1.0 in canary at 5%, served by git daemon; two clones."""
    from modelctl import ops
    from modelctl.registry import Registry

    reg = Registry(registry)
    ops.register(reg, write_bundle(version="1.0.0"))
    ops.promote(reg, "support-agent", "1.0.0", "active", force=True, reason="first version")
    ops.register(reg, write_bundle("b.yaml", version="1.1.0", parent="1.0.0", temperature=0.5))
    ops.canary(reg, "support-agent", "1.1.0", 5, force=True, reason="try it")
    served = tmp_path / "served" / "registry.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(registry), str(served)], check=True)
    url = daemon.url("registry.git")
    return clone(url, tmp_path / "a"), clone(url, tmp_path / "b"), served


def test_two_processes_rolling_back_one_canary_make_one_rollback(canary_clones):
    a, b, served = canary_clones
    before = set(tags(served))
    first = Stopped(["rollback", "support-agent", "--expect-canary", "1.1.0", "--reason", "watcher a", "--push"], a)
    second = run_cli("rollback", "support-agent", "--expect-canary", "1.1.0", "--reason", "watcher b", "--push", cwd=b,
                     env={"GIT_AUTHOR_NAME": "Bea Watcher", "GIT_COMMITTER_NAME": "Bea Watcher",
                          "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"})
    assert second.returncode == 0, second.stderr
    code, out, err = first.finish()
    assert code == 0, err
    assert first.stops == 1  # its re-plan found the canary already rolled back: nothing more to push
    assert "already" in out and "rolled back by Bea Watcher" in out
    rollbacks = [c for c in commits(served) if c["trailers"].get("Modelctl-Action") == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["trailers"]["Modelctl-Reason"] == "watcher b"
    new_tags = set(tags(served)) - before
    assert new_tags == {n for n in new_tags if n.startswith("support-agent#canary!#")} and len(new_tags) == 1
    assert_tags_in_history(served)
    dep = git(served, "show", "main:deployments/support-agent.yaml")
    assert "canary: null" in dep and '"1.1.0": rolled-back' in dep
    assert git(a, "rev-parse", "main") == git(served, "rev-parse", "main") and index_consistent(a)


def test_a_rollback_whose_canary_was_replaced_exits_3_and_writes_nothing(canary_clones):
    a, b, served = canary_clones
    first = Stopped(["rollback", "support-agent", "--expect-canary", "1.1.0", "--push"], a)
    promoted = run_cli("promote", "support-agent", "1.1.0", "--to", "active", "--push", cwd=b)
    assert promoted.returncode == 0, promoted.stderr
    after_promotion = git(served, "for-each-ref")
    code, _, err = first.finish()
    assert code == 3
    assert "1.1.0 is no longer the canary version of support-agent (it is active); nothing was rolled back" in err
    assert git(served, "for-each-ref") == after_promotion
    assert not [c for c in commits(served) if c["trailers"].get("Modelctl-Action") == "rollback"]
    assert leftovers(a) == []
