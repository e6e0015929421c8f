"""Promotion pull requests: --branch puts the commit on a new branch (no tags, base untouched) and prints a
Markdown body; after the merge, doctor --fix creates the tags."""
from __future__ import annotations

import json

import pytest
from conftest import git, repo_state, run_cli
from evalkit import NAME, configure, promote, register, trailers
from gitremote import bare_remote, clone

BETTER = {"accuracy": (0.95, 1200), "hallucination_rate": (0.010, 1200), "latency_p95_ms": (860, None)}


@pytest.fixture
def served(registry, tmp_path):
    """1.0.0 active with a report, 1.1.0 registered with a better one; no stages required."""
    configure(registry, pipeline=[])
    register(registry, tmp_path, "1.0.0")
    promote(registry, "1.0.0")
    register(registry, tmp_path, "1.1.0", "1.0.0", metrics=BETTER)
    return registry


def refs(repo, pattern="refs/tags"):
    return git(repo, "for-each-ref", "--format=%(refname)", pattern).split()


def test_promote_on_a_branch_leaves_the_base_and_tags_alone(served):
    tags_before = refs(served)
    main_before = git(served, "rev-parse", "main")
    files_before = repo_state(served)["files"]
    proc = run_cli("canary", NAME, "1.1.0", "--pct", "5", "--branch", "promote/support-agent-1.1.0", cwd=served)
    assert proc.returncode == 0, proc.stderr
    # the base branch, its work tree and the tags are as they were
    assert git(served, "rev-parse", "main") == main_before
    assert repo_state(served)["files"] == files_before
    assert refs(served) == tags_before
    # the review branch has exactly one commit on top of main: the deployment file and its rendering
    branch = "promote/support-agent-1.1.0"
    assert git(served, "rev-parse", f"{branch}^") == main_before
    assert git(served, "show", "--name-only", "--format=", branch).split() == [
        "deployments/support-agent.yaml", "rendered/modelctl-support-agent.yaml"]
    assert trailers(served, branch)["Modelctl-Action"] == "canary"
    assert "canary:\n  version: \"1.1.0\"\n  percent: 5" in git(served, "show", f"{branch}:deployments/support-agent.yaml")
    # stdout is the pull-request body; the outcome goes to stderr
    body = proc.stdout
    assert body.startswith("## modelctl: canary support-agent 1.1.0 at 5%")
    assert "Branch `promote/support-agent-1.1.0` into `main`" in body
    assert "### State change" in body and "**registered** → **canary**" in body
    assert '+canary:' in body or '+  version: "1.1.0"' in body  # the deployment diff
    assert "### Bundle against the serving version" in body
    assert "| config.temperature | 0.3 | 0.31 |" in body
    assert "### Eval gate" in body and "Eval gate passed: support-agent 1.1.0" in body
    assert "Compared with support-agent 1.0.0 on dataset golden-support version 3" in body
    assert "modelctl doctor --fix" in body
    assert "on branch promote/support-agent-1.1.0" in proc.stderr
    assert "open a pull request from promote/support-agent-1.1.0 into main" in proc.stderr


def test_the_body_shows_a_failing_gate_and_the_override(served, tmp_path):
    configure(served, gate_required=True)
    register(served, tmp_path, "1.2.0", "1.1.0", metrics={**BETTER, "accuracy": (0.90, 1200)})
    proc = run_cli("promote", NAME, "1.2.0", "--to", "active", "--force", "--reason", "hotfix for outage",
                   "--branch", "hotfix", cwd=served)
    assert proc.returncode == 0, proc.stderr
    body = proc.stdout
    assert "Eval gate failed: support-agent 1.2.0" in body
    assert "Recorded in the commit: `Modelctl-Gate-Override: hotfix for outage`" in body
    assert "**Failed:**" in body and "accuracy" in body
    # promoting to active compares with the version it replaces, not with itself
    assert "against the serving 1.0.0" in body


def test_pr_body_file_and_json(served, tmp_path):
    out = tmp_path / "body.md"
    proc = run_cli("promote", NAME, "1.1.0", "--to", "staging", "--branch", "stage-1.1.0", "--pr-body", out,
                   cwd=served)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("## modelctl: promote support-agent 1.1.0 to staging")
    assert "on branch stage-1.1.0" in proc.stdout and "## modelctl" not in proc.stdout
    assert f"pull-request body written to {out}" in proc.stderr
    proc = run_cli("shadow", NAME, "1.1.0", "--pct", "25", "--branch", "shadow-1.1.0", "--json", cwd=served)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["branch"] == "shadow-1.1.0" and doc["tags"] == []
    assert doc["pull_request"]["branch"] == "shadow-1.1.0" and doc["pull_request"]["base"] == "main"
    assert doc["pull_request"]["body"].startswith("## modelctl: shadow support-agent 1.1.0")


def test_register_on_a_branch(served, tmp_path):
    from evalkit import bundle_file, write_report

    write_report(served, "1.2.0", **BETTER)
    before_tags = refs(served)
    proc = run_cli("register", bundle_file(tmp_path, "1.2.0", "1.1.0", temperature=0.4), "--branch", "add-1.2.0",
                   cwd=served)
    assert proc.returncode == 0, proc.stderr
    assert refs(served) == before_tags  # no support-agent@v1.2.0 until the merge
    assert "bundles/support-agent/1.2.0.yaml" in git(served, "show", "--name-only", "--format=", "add-1.2.0")
    assert "bundles/support-agent/1.2.0.yaml" not in git(served, "ls-files")
    assert "**new** → **registered**" in proc.stdout
    assert "Compared with support-agent 1.0.0" in proc.stdout


def test_refusals_write_nothing(served, tmp_path):
    git(served, "branch", "taken")
    before = repo_state(served)
    cases = [
        (("canary", NAME, "1.1.0", "--pct", "5", "--branch", "taken"), "already exists"),
        (("canary", NAME, "1.1.0", "--pct", "5", "--branch", "-x"), "invalid branch name"),
        (("canary", NAME, "1.1.0", "--pct", "5", "--branch", "a..b"), "invalid branch name"),
        (("canary", NAME, "1.1.0", "--pct", "5", "--pr-body", tmp_path / "b.md"), "--pr-body needs --branch"),
        (("canary", NAME, "1.1.0", "--pct", "5", "--branch", "x", "--pr-body", tmp_path / "no" / "b.md"),
         "does not exist"),
        (("canary", NAME, "1.1.0", "--pct", "5", "--branch", "x", "--reason",
          "key sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789abcd"), "looks like a secret"),
    ]
    for args, message in cases:
        proc = run_cli(*args, cwd=served)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Ab3dEf9hIjKlMnOp" not in proc.stderr + proc.stdout
        assert repo_state(served) == before, args
    assert not (tmp_path / "b.md").exists()


def test_already_done_on_a_branch_makes_no_branch(served):
    proc = run_cli("promote", NAME, "1.0.0", "--to", "active", "--branch", "noop", cwd=served)
    assert proc.returncode == 0 and "already" in proc.stdout + proc.stderr
    assert "refs/heads/noop" not in refs(served, "refs/heads")


def test_pushed_branch_merged_then_doctor_fix_creates_the_tags(served, tmp_path):
    """The whole flow of docs/pull-requests.md against a real remote."""
    remote = tmp_path / "remote.git"
    url = bare_remote(served, remote)
    remote_tags = refs(remote)
    remote_main = git(remote, "rev-parse", "main")
    proc = run_cli("canary", NAME, "1.1.0", "--pct", "5", "--push", "--branch", "promote/1.1.0", cwd=served)
    assert proc.returncode == 0, proc.stderr
    assert "(pushed)" in proc.stderr
    # the branch is on the remote; main and the tags there are untouched
    assert git(remote, "rev-parse", "promote/1.1.0") == git(served, "rev-parse", "promote/1.1.0")
    assert git(remote, "rev-parse", "main") == remote_main
    assert refs(remote) == remote_tags
    # a reviewer merges the pull request (a merge commit, as GitHub makes)
    ci = clone(url, tmp_path / "ci")
    git(ci, "merge", "-q", "--no-ff", "origin/promote/1.1.0", "-m", "Merge pull request #7 from promote/1.1.0")
    git(ci, "push", "-q", "origin", "main")
    # doctor on main explains the missing tags, --fix --push creates them on the remote
    proc = run_cli("doctor", cwd=ci)
    assert proc.returncode == 1 and "canary" in proc.stdout
    proc = run_cli("doctor", "--fix", "--push", cwd=ci)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = sorted(set(refs(remote)) - set(remote_tags))
    assert new == ["refs/tags/support-agent#canary#2"], new
    # GTO's rule: stage tags point at the version's registration commit
    assert git(remote, "rev-parse", "support-agent#canary#2^{commit}") == \
        git(remote, "rev-parse", "support-agent@v1.1.0^{commit}")
    assert run_cli("doctor", cwd=ci).returncode == 0
    proc = run_cli("status", NAME, "--json", cwd=ci)
    assert json.loads(proc.stdout)["models"][0]["canary"]["version"] == "1.1.0"
