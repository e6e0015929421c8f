"""Crash safety (DESIGN §4): modelctl SIGKILLed at every point of the write path, 100 operations.

Each operation runs in a forked child with `MODELCTL_FAULT=<point>`, which kills it with SIGKILL
at that point. After every crash the test asserts, on the repositories themselves:
- the remote holds the whole operation (commit and tag) or none of it, never half;
- `doctor` explains exactly what the crash left (stale lock, temporary index, interrupted
  work-tree update, a clone behind the remote);
- `doctor --fix` repairs it: lock and temp files gone, clone equal to the remote, index and work
  tree consistent;
- re-running the interrupted command completes it exactly once (a crash after the push makes the
  re-run an "already registered" no-op).
A few crashes go through the real command line as well.
"""
from __future__ import annotations

import os
import signal

import pytest
from conftest import bundle_text, git, run_cli
from gitremote import (
    assert_deployments_valid,
    assert_tags_in_history,
    bare_remote,
    commits,
    index_consistent,
    leftovers,
    tags,
)

REPS_PUSH = 10  # x 8 points = 80 pushed operations
REPS_LOCAL = 4  # x 5 points = 20 local operations (100 in all)

LANDED_AFTER = {"after-push", "after-local-refs", "during-sync"}  # the remote (or branch) has it


def expected_findings(point: str, push: bool) -> set[str]:
    """What doctor must report after a kill at `point`: the dead writer's lock record, plus what it left."""
    found = {"stale-lock"}
    if point == "during-index":
        found.add("temp-index")
    if point == "after-push":
        found.add("behind")
    if point in ("after-local-refs", "during-sync"):
        found.add("interrupted-sync")
    return found


def crash(registry, bundle, point: str, push: bool) -> int:
    """Register in a forked child killed at `point`; returns -signal or the exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.environ["MODELCTL_FAULT"] = point
            from modelctl import ops
            from modelctl.errors import ModelctlError
            from modelctl.registry import Registry

            try:
                ops.register(Registry(registry), bundle, opts=ops.WriteOptions(push=push))
            except ModelctlError as exc:
                code = exc.exit_code
        except BaseException:
            code = 99
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def register_commits(repo, model, version, ref="main"):
    return [c for c in commits(repo, ref) if c["trailers"].get("Modelctl-Action") == "register"
            and c["trailers"].get("Modelctl-Model") == model and c["trailers"].get("Modelctl-Version") == version]


def run_scenarios(registry, target, points, reps, push, tmp_path):
    """Crash, inspect, repair, re-run; `target` is the repository whose branch is the truth (remote or clone)."""
    from modelctl import doctor, ops
    from modelctl.registry import Registry

    n = 0
    for rep in range(reps):
        for point in points:
            n += 1
            model, version = f"m{n % 3}", f"1.{rep}.{n}"
            f = tmp_path / "in" / f"{model}-{version}.yaml"
            f.parent.mkdir(exist_ok=True)
            f.write_text(bundle_text(name=model, version=version))
            where = f"{point} #{n}"

            assert crash(registry, f, point, push) == -signal.SIGKILL, where
            # never half an operation: the commit and its tag are both there or both absent
            landed = register_commits(target, model, version)
            tag = tags(target).get(f"{model}@v{version}")
            assert len(landed) == (1 if point in LANDED_AFTER else 0), where
            assert tag == (landed[0]["sha"] if landed else None), where

            reg = Registry(registry)
            report = doctor.run(reg, push=push)
            kinds = {f["kind"] for f in report["findings"]}
            assert kinds == expected_findings(point, push), (where, report["findings"])
            assert not report["ok"]

            fixed = doctor.run(reg, push=push, fix=True)
            assert fixed["ok"] and fixed["findings"] == [], (where, fixed)
            assert leftovers(registry) == [] and index_consistent(registry), where
            if push:
                assert git(registry, "rev-parse", "main") == git(target, "rev-parse", "main"), where

            out = ops.register(reg, f, opts=ops.WriteOptions(push=push))
            assert out.noop == (point in LANDED_AFTER), where
            once = register_commits(target, model, version)
            assert len(once) == 1, where
            assert tags(target)[f"{model}@v{version}"] == once[0]["sha"], where
            assert git(registry, "status", "--porcelain") == "", where
    return n


@pytest.mark.parametrize("point", ["before-fetch", "during-index", "after-commit-object", "after-tag-objects",
                                   "before-push", "after-push", "after-local-refs", "during-sync"])
def test_kill_during_a_pushed_write(registry, tmp_path, point):
    remote = tmp_path / "remote.git"
    bare_remote(registry, remote)
    assert run_scenarios(registry, remote, [point], REPS_PUSH, True, tmp_path) == REPS_PUSH
    assert_tags_in_history(remote)
    assert assert_deployments_valid(remote) == 3  # one per model: a registration leaves an existing file as it was
    assert git(registry, "rev-parse", "main") == git(remote, "rev-parse", "main")


def test_kill_during_a_local_write(registry, tmp_path):
    points = ["during-index", "after-commit-object", "after-tag-objects", "after-local-refs", "during-sync"]
    assert run_scenarios(registry, registry, points, REPS_LOCAL, False, tmp_path) == len(points) * REPS_LOCAL
    assert_tags_in_history(registry)
    assert assert_deployments_valid(registry) == 3  # one per model (m0, m1, m2)


def test_fault_points_are_all_exercised():
    from modelctl.store import FAULT_POINTS

    # after-push-timeout is reached only after a push timed out: test_clones stops a writer there
    assert set(FAULT_POINTS) == {"before-fetch", "during-index", "after-commit-object", "after-tag-objects",
                                 "before-push", "after-push-timeout", "after-push", "after-local-refs",
                                 "during-sync"}


@pytest.mark.parametrize("point, explained, rerun", [
    ("during-index", "leftover temporary index", "registered support-agent 1.0.0: commit"),
    ("after-push", "local main is 1 commit(s) behind origin/main", "already done: support-agent 1.0.0 is already"),
    ("after-local-refs", "did not update the work tree", "already done: support-agent 1.0.0 is already"),
])
def test_the_real_command_killed_then_doctor_then_rerun(registry, tmp_path, write_bundle, point, explained, rerun):
    remote = tmp_path / "remote.git"
    bare_remote(registry, remote)
    f = write_bundle(version="1.0.0")
    killed = run_cli("register", f, "--push", cwd=registry, env={"MODELCTL_FAULT": point})
    assert killed.returncode == -signal.SIGKILL
    report = run_cli("doctor", "--push", cwd=registry)
    assert report.returncode == 1
    assert "error: stale modelctl lock .git/modelctl.lock: pid " in report.stdout and explained in report.stdout
    repaired = run_cli("doctor", "--push", "--fix", cwd=registry)
    assert repaired.returncode == 0 and "ok: repaired, no problems" in repaired.stdout, repaired.stdout
    again = run_cli("register", f, "--push", cwd=registry)
    assert again.returncode == 0 and again.stdout.startswith(rerun), again.stdout
    assert len(register_commits(remote, "support-agent", "1.0.0")) == 1
    assert list(tags(remote)) == ["support-agent@v1.0.0"]
    assert git(registry, "status", "--porcelain") == "" and leftovers(registry) == []
    assert run_cli("doctor", "--push", cwd=registry).returncode == 0


def test_kill_during_canary_moves_then_rerun_lands_once(registry, tmp_path, write_bundle):
    """Lifecycle writes are crash-safe too: a killed canary move is completed (or found done) by its re-run."""
    from modelctl import doctor, ops
    from modelctl.registry import Registry

    remote = tmp_path / "remote.git"
    reg = Registry(registry)
    ops.register(reg, write_bundle(version="1.0.0"))
    ops.promote(reg, "support-agent", "1.0.0", "active", force=True, reason="first")
    ops.register(reg, write_bundle("b.yaml", version="1.1.0", parent="1.0.0", temperature=0.5))
    ops.canary(reg, "support-agent", "1.1.0", 5, force=True, reason="start")
    bare_remote(registry, remote)
    percent = 5
    for n, point in enumerate(["before-fetch", "during-index", "after-commit-object", "after-tag-objects",
                               "before-push", "after-push", "after-local-refs", "during-sync"]):
        percent = 10 if percent == 5 else 5
        reason = f"step-{n}"
        pid = os.fork()
        if pid == 0:
            try:
                os.environ["MODELCTL_FAULT"] = point
                ops.canary(Registry(registry), "support-agent", "1.1.0", percent, reason=reason,
                           opts=ops.WriteOptions(push=True))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, point
        landed = [c for c in commits(remote) if c["trailers"].get("Modelctl-Reason") == reason]
        assert len(landed) == (1 if point in LANDED_AFTER else 0), point
        assert doctor.run(Registry(registry), push=True, fix=True)["ok"], point
        out = ops.canary(Registry(registry), "support-agent", "1.1.0", percent, reason=reason,
                         opts=ops.WriteOptions(push=True))
        assert out.noop == (point in LANDED_AFTER), point
        once = [c for c in commits(remote) if c["trailers"].get("Modelctl-Reason") == reason]
        assert len(once) == 1 and once[0]["trailers"]["Modelctl-Percent"] == str(percent), point
        stage_tags = [t for t, commit in tags(remote).items() if t.startswith("support-agent#canary#")]
        assert len(stage_tags) == n + 2, point  # the start, then exactly one per move
    assert_tags_in_history(remote)
    assert doctor.run(Registry(registry), push=True)["findings"] == []
