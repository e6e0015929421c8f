"""doctor: what it reports (with ages, on the repository's real state), what --fix repairs, what it leaves
to a human, and its exit codes (0 clean or repaired, 1 problems remain, 4 remote unreachable)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from conftest import git, run_cli
from gitremote import bare_remote, clone, index_consistent, leftovers, tags
from test_remote import Stopped, bundle_file


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def doctor_json(repo, *args, env=None):
    proc = run_cli("doctor", "--json", *args, cwd=repo, env=env)
    return proc.returncode, json.loads(proc.stdout)


def kinds(doc):
    return sorted(f["kind"] for f in doc["findings"])


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def remote(registry, tmp_path):
    path = tmp_path / "remote.git"
    bare_remote(registry, path)
    return path


def test_a_clean_registry_is_ok(registry, write_bundle):
    assert run_cli("register", write_bundle(), cwd=registry).returncode == 0
    proc = run_cli("doctor", cwd=registry)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: no problems (checked main at ")
    code, doc = doctor_json(registry)
    assert code == 0 and doc["schema"] == "modelctl/v1" and doc["ok"] and doc["findings"] == []


# -- lock and temporary files ----------------------------------------------------------------

def test_stale_modelctl_lock_is_reported_with_its_age_and_cleared(registry):
    lock = registry / ".git/modelctl.lock"
    pid = dead_pid()
    lock.write_text(json.dumps({"pid": pid, "since": int(time.time()) - 3600}))
    proc = run_cli("doctor", cwd=registry)
    assert proc.returncode == 1
    assert f"error: stale modelctl lock .git/modelctl.lock: pid {pid}, taken 60m ago, died without releasing it " \
           "(--fix: clear it)" in proc.stdout
    fixed = run_cli("doctor", "--fix", cwd=registry)
    assert fixed.returncode == 0 and f"fixed: released the stale modelctl lock (pid {pid}" in fixed.stdout
    assert lock.read_text() == ""


def test_a_live_writer_is_not_a_problem_and_fix_waits_for_it(registry, tmp_path):
    # stopped while its temporary index exists: that index belongs to a live process
    writer = Stopped(["register", bundle_file(tmp_path, "a.yaml", version="1.0.0")], registry, point="during-index")
    code, doc = doctor_json(registry)
    assert code == 0 and kinds(doc) == ["lock-held"]
    assert f"pid {writer.proc.pid} has held .git/modelctl.lock" in doc["findings"][0]["message"]
    busy = run_cli("doctor", "--fix", cwd=registry, env={"MODELCTL_LOCK_TIMEOUT": "0.2"})
    assert busy.returncode == 3 and f"pid {writer.proc.pid}" in busy.stderr
    assert writer.finish()[0] == 0
    assert run_cli("doctor", cwd=registry).returncode == 0 and leftovers(registry) == []


def test_leftover_temp_index_and_stale_git_locks(registry):
    gd = registry / ".git"
    pid = dead_pid()
    (gd / f"modelctl-index-{pid}").write_bytes(b"DIRC")
    age(gd / f"modelctl-index-{pid}", 1800)
    (gd / "index.lock").write_bytes(b"")
    age(gd / "index.lock", 7200)
    (gd / "refs/heads/main.lock").write_text("x\n")
    age(gd / "refs/heads/main.lock", 600)
    (gd / "packed-refs.lock").write_text("")  # fresh: a git command is probably running
    code, doc = doctor_json(registry)
    assert code == 1 and kinds(doc) == ["git-lock", "git-lock", "git-lock-fresh", "temp-index"]
    text = run_cli("doctor", cwd=registry).stdout
    assert f"leftover temporary index .git/modelctl-index-{pid} of a killed write (pid {pid}, 30m old)" in text
    assert "stale git lock file .git/index.lock (2h old)" in text and "stale git lock file .git/refs/heads/main.lock (10m old)" in text
    assert re.search(r"info: git lock file \.git/packed-refs\.lock is \d+s old: a git command is probably running", text)
    code, doc = doctor_json(registry, "--fix")
    assert code == 0 and kinds(doc) == ["git-lock-fresh"]
    assert not (gd / "index.lock").exists() and not (gd / "refs/heads/main.lock").exists()
    assert (gd / "packed-refs.lock").exists() and leftovers(registry) == []


def test_a_write_blocked_by_a_stale_git_lock_says_so_and_writes_nothing(registry, write_bundle):
    lock = registry / ".git/refs/heads/main.lock"
    lock.write_text("")
    age(lock, 3600)
    before = git(registry, "for-each-ref")
    proc = run_cli("register", write_bundle(), cwd=registry)
    assert proc.returncode == 3 and ".git/refs/heads/main.lock exists" in proc.stderr and "doctor --fix" in proc.stderr
    assert git(registry, "for-each-ref") == before and git(registry, "status", "--porcelain") == ""
    assert run_cli("doctor", "--fix", cwd=registry).returncode == 0
    assert run_cli("register", write_bundle(), cwd=registry).returncode == 0


def test_an_interrupted_work_tree_update_is_finished(registry, write_bundle):
    killed = run_cli("register", write_bundle(), cwd=registry, env={"MODELCTL_FAULT": "after-local-refs"})
    assert killed.returncode < 0
    # the branch moved, the checkout did not: git status shows the commit's changes reversed
    assert git(registry, "status", "--porcelain") != ""
    proc = run_cli("doctor", cwd=registry)
    assert proc.returncode == 1 and "moved main to" in proc.stdout and "did not update the work tree (2 file(s))" in proc.stdout
    assert run_cli("doctor", "--fix", cwd=registry).returncode == 0
    assert git(registry, "status", "--porcelain") == "" and index_consistent(registry)
    assert (registry / "bundles/support-agent/1.0.0.yaml").exists()


# -- the remote ------------------------------------------------------------------------------

def test_unpushed_commits_and_tags_are_pushed_atomically(registry, remote, write_bundle):
    assert run_cli("register", write_bundle(), "--no-push", cwd=registry).returncode == 0
    local = git(registry, "rev-parse", "main").strip()
    code, doc = doctor_json(registry, "--push")
    assert code == 1 and kinds(doc) == ["unpushed-commits", "unpushed-tag"]
    assert "1 local commit(s) on main never reached origin/main: " in doc["findings"][0]["message"]
    assert "modelctl: register support-agent 1.0.0" in doc["findings"][0]["message"]
    assert doc["remote"]["ahead"] == 1 and doc["remote"]["behind"] == 0
    code, doc = doctor_json(registry, "--push", "--fix")
    assert code == 0 and doc["fixed"] == ["pushed main to origin with 1 tag(s)"]
    assert git(remote, "rev-parse", "main").strip() == local
    assert tags(remote) == {"support-agent@v1.0.0": local}


def test_a_diverged_clone_needs_a_human(registry, remote, tmp_path):
    other = clone("file://" + str(remote), tmp_path / "other")
    assert run_cli("register", bundle_file(tmp_path, "x.yaml", name="x", version="1.0.0"), "--push",
                   cwd=other).returncode == 0
    assert run_cli("register", bundle_file(tmp_path, "y.yaml", name="y", version="1.0.0"), "--no-push",
                   cwd=registry).returncode == 0
    before = git(remote, "for-each-ref")
    proc = run_cli("doctor", "--push", "--fix", cwd=registry)
    assert proc.returncode == 1
    assert "local main and origin/main diverged: 1 local commit(s) never reached the remote" in proc.stdout
    assert "problem(s) remain that need a human" in proc.stdout
    assert git(remote, "for-each-ref") == before  # never forced, never merged behind the user's back


def test_a_local_tag_outside_the_history_is_deleted_only_when_it_never_reached_the_remote(registry, remote):
    dangling = git(registry, "commit-tree", "-m", "lost", "HEAD^{tree}").strip()
    git(registry, "tag", "-a", "-m", "lost", "support-agent@v9.9.9", dangling)
    proc = run_cli("doctor", "--push", cwd=registry)
    assert proc.returncode == 1 and "local tag support-agent@v9.9.9 points at" in proc.stdout
    assert run_cli("doctor", "--push", "--fix", cwd=registry).returncode == 0
    assert "support-agent@v9.9.9" not in tags(registry)
    # the same tag on the remote cannot be removed without a forced update: reported, left alone
    git(registry, "tag", "-a", "-m", "lost", "support-agent@v9.9.9", dangling)
    git(registry, "push", "-q", "origin", "support-agent@v9.9.9")
    proc = run_cli("doctor", "--push", "--fix", cwd=registry)
    assert proc.returncode == 1 and "git push origin :refs/tags/support-agent@v9.9.9" in proc.stdout
    assert "support-agent@v9.9.9" in tags(remote)


# -- tags against deployment files -----------------------------------------------------------

def merge_review_branch(remote, tmp_path, branch):
    """Merge a pushed review branch into main the way a pull request does (a merge commit)."""
    work = clone("file://" + str(remote), tmp_path / f"merge-{branch.replace('/', '-')}")
    git(work, "merge", "-q", "--no-ff", "-m", f"Merge pull request: {branch}", f"origin/{branch}")
    git(work, "push", "-q", "origin", "main")


def test_a_registration_merged_through_a_pull_request_gets_its_tag(registry, remote, write_bundle, tmp_path):
    assert run_cli("register", write_bundle(), "--push", "--branch", "review/sa", cwd=registry).returncode == 0
    added = git(remote, "rev-parse", "review/sa").strip()
    merge_review_branch(remote, tmp_path, "review/sa")
    fresh = clone("file://" + str(remote), tmp_path / "fresh")
    proc = run_cli("doctor", "--push", cwd=fresh)
    assert proc.returncode == 1
    assert f"registration tag support-agent@v1.0.0 is missing for bundles/support-agent/1.0.0.yaml (added in {added[:12]})" \
        in proc.stdout
    fixed = run_cli("doctor", "--push", "--fix", cwd=fresh)
    assert fixed.returncode == 0 and "fixed: created tag support-agent@v1.0.0 (pushed)" in fixed.stdout
    assert tags(remote) == {"support-agent@v1.0.0": added}
    message = git(remote, "cat-file", "-p", "support-agent@v1.0.0")
    assert "Modelctl-Action: register" in message and f"Modelctl-Commit: {added}" in message
    assert run_cli("doctor", "--push", "--fix", cwd=fresh).stdout.startswith("ok: no problems")


def _edit_deployment(repo, name, edit, subject):
    import yaml

    path = repo / "deployments" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    git(repo, "commit", "-q", "-am", subject)
    return git(repo, "rev-parse", "HEAD").strip()


def test_stage_tags_are_rebuilt_from_the_deployment_file(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    assert run_cli("register", write_bundle("b.yaml", version="1.1.0", parent="1.0.0", temperature=0.5),
                   cwd=registry).returncode == 0
    reg_commit = {v: git(registry, "rev-parse", f"support-agent@v{v}^{{commit}}").strip() for v in ("1.0.0", "1.1.0")}

    def promote(d):  # what a hand-merged promotion does to the file
        d["active"] = "1.0.0"
        d["versions"]["1.0.0"] = "active"
        d["canary"] = {"version": "1.1.0", "percent": 5}
        d["versions"]["1.1.0"] = "canary"

    state = _edit_deployment(registry, "support-agent", promote, "promote by hand")
    proc = run_cli("doctor", cwd=registry)
    assert proc.returncode == 1
    assert "deployments/support-agent.yaml says active 1.0.0 but the tags say none" in proc.stdout
    assert "deployments/support-agent.yaml says canary 1.1.0 but the tags say none" in proc.stdout
    assert run_cli("doctor", "--fix", cwd=registry).returncode == 0
    made = tags(registry)
    assert made["support-agent#canary#1"] == reg_commit["1.1.0"]
    assert made["support-agent#active#2"] == reg_commit["1.0.0"]
    canary = git(registry, "cat-file", "-p", "support-agent#canary#1")
    assert f"Modelctl-Commit: {state}" in canary and "Modelctl-Percent: 5" in canary

    def rollback(d):  # the canary pulled by hand: the tags must say it left
        d["canary"] = None
        d["versions"]["1.1.0"] = "rolled-back"

    _edit_deployment(registry, "support-agent", rollback, "pull the canary by hand")
    code, doc = doctor_json(registry, "--fix")
    assert code == 0 and doc["fixed"] == ["created tag support-agent#canary!#3"]
    times = [int(git(registry, "for-each-ref", "--format=%(taggerdate:unix)", f"refs/tags/{t}").strip())
             for t in ("support-agent#canary#1", "support-agent#active#2", "support-agent#canary!#3")]
    assert times == sorted(set(times))  # strictly increasing: GTO orders events by tagger time
    assert doctor_json(registry)[1]["findings"] == []


def test_remote_unreachable_is_exit_4_but_local_problems_are_still_reported(registry, remote):
    from gitremote import free_port

    git(registry, "remote", "set-url", "origin", f"git://127.0.0.1:{free_port()}/registry.git")
    lock = registry / ".git/index.lock"
    lock.write_text("")
    age(lock, 3600)
    code, doc = doctor_json(registry, "--push")
    assert code == 4 and doc["remote"]["reachable"] is False
    assert kinds(doc) == ["git-lock", "remote-unreachable"]


def _hand_bundle(repo, version, model_id="gpt-4.1-mini-2025-04-14", parent=None, temperature=0.3):
    """Commit a bundle the way a merged pull request would (no register, no tag); sha256 filled in."""
    from conftest import bundle_text

    from modelctl.bundle import sha256

    digest = sha256((repo / "prompts" / "p1.txt").read_bytes())
    text = bundle_text(version=version, model_id=model_id, parent=parent, temperature=temperature)
    text = text.replace("  template: prompts/p1.txt\n", f"  template: prompts/p1.txt\n  sha256: {digest}\n")
    rel = f"bundles/support-agent/{version}.yaml"
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_text(text)
    git(repo, "add", rel)
    git(repo, "commit", "-q", "-m", f"add {version} by hand")


def test_fix_tags_only_bundles_that_pass_every_register_rule(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    _hand_bundle(registry, "1.1.0", parent="1.0.0", temperature=0.4)            # a valid prompt-less config change
    _hand_bundle(registry, "1.2.0", parent="1.1.0", model_id="gpt-4o-latest")  # an alias: register refuses it
    _hand_bundle(registry, "1.3.0", parent="1.1.0", model_id="gpt-4.1-2025-04-14", temperature=0.9)  # two changes
    code, doc = doctor_json(registry, "--fix")
    assert code == 1
    assert doc["fixed"] == ["created tag support-agent@v1.1.0"]
    assert "support-agent@v1.2.0" not in tags(registry) and "support-agent@v1.3.0" not in tags(registry)
    invalid = [f for f in doc["findings"] if f["kind"] == "invalid-bundle"]
    assert [f["message"].split(" (added")[0] for f in invalid] == [
        "bundles/support-agent/1.2.0.yaml", "bundles/support-agent/1.3.0.yaml"]
    assert "latest" in invalid[0]["message"] and "gets no registration tag" in invalid[0]["message"]
    assert "changes model and config against its parent 1.1.0" in invalid[1]["message"]
    assert all(f["fix"] is None for f in invalid)
    # reported again on the next run, never tagged
    code, again = doctor_json(registry, "--fix")
    assert code == 1 and again["fixed"] == [] and "support-agent@v1.2.0" not in tags(registry)


def test_replaced_and_archived_versions_get_the_tags_gto_needs(registry, write_bundle):
    for fields in (dict(version="1.0.0"), dict(version="1.1.0", parent="1.0.0", temperature=0.5)):
        assert run_cli("register", write_bundle(f"{fields['version']}.yaml", **fields), cwd=registry).returncode == 0
    assert run_cli("promote", "support-agent", "1.0.0", "--to", "staging", cwd=registry).returncode == 0
    assert run_cli("promote", "support-agent", "1.0.0", "--to", "active", cwd=registry).returncode == 0
    reg_commit = {v: git(registry, "rev-parse", f"support-agent@v{v}^{{commit}}").strip() for v in ("1.0.0", "1.1.0")}

    def replace(d):  # a promotion merged by hand: 1.1.0 replaces 1.0.0
        d.update(active="1.1.0", previous="1.0.0")
        d["versions"].update({"1.0.0": "deprecated", "1.1.0": "active"})

    _edit_deployment(registry, "support-agent", replace, "ship 1.1.0")
    proc = run_cli("doctor", cwd=registry)
    assert "says active 1.1.0 but the tags say 1.0.0" in proc.stdout
    code, doc = doctor_json(registry, "--fix")
    assert code == 0, doc
    assert doc["fixed"] == ["created tag support-agent#active!#4", "created tag support-agent#active#5"]
    made = tags(registry)
    assert made["support-agent#active!#4"] == reg_commit["1.0.0"] and made["support-agent#active#5"] == reg_commit["1.1.0"]

    _edit_deployment(registry, "support-agent", lambda d: d["versions"].update({"1.0.0": "archived"})
                     or d.update(previous=None), "archive 1.0.0")
    code, doc = doctor_json(registry, "--fix")
    assert code == 0 and doc["fixed"] == ["created tag support-agent@v1.0.0!"]
    assert tags(registry)["support-agent@v1.0.0!"] == reg_commit["1.0.0"]
    assert doctor_json(registry)[1]["findings"] == []
    # the same moves made by the commands leave nothing for doctor to do
    assert run_cli("register", write_bundle("c.yaml", version="1.2.0", parent="1.1.0", temperature=0.6),
                   cwd=registry).returncode == 0
    for args in (["promote", "support-agent", "1.2.0", "--to", "active", "--force", "--reason", "hotfix"],
                 ["rollback", "support-agent", "--from", "1.2.0"], ["promote", "support-agent", "1.2.0", "--to", "archived"]):
        assert run_cli(*args, cwd=registry).returncode == 0, args
    code, doc = doctor_json(registry)
    assert code == 0 and doc["findings"] == []
