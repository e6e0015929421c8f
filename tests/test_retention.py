"""Retention: `modelctl gc` archives old deprecated versions in one commit (never the rollback
target), and a rollback warns when the version it returns to is past the hot-standby window."""
from __future__ import annotations

import json

import pytest
from conftest import git, new_registry, repo_state, run_cli

NAME = "support-agent"


def bundle_text(name: str, version: str, parent: str | None, temperature: float) -> str:
    parent_line = f'parent: "{parent}"\n' if parent else ""
    return (f'apiVersion: modelctl/v1\nkind: Bundle\nname: {name}\nversion: "{version}"\n{parent_line}'
            "model:\n  provider: openai\n  id: gpt-4.1-mini-2025-04-14\n"
            "prompt:\n  template: prompts/p1.txt\n"
            f"config:\n  temperature: {temperature}\n"
            "baseline:\n  error_rate: 0.01\n  latency_p95_ms: 900\n  cost_per_request: 0.001\n  requests: 10000\n")


def configure(reg, keep: int) -> None:
    path = reg / "modelctl.yaml"
    text = path.read_text().replace("required: [staging, shadow, canary]", "required: []")
    text = text.replace("keep_deprecated: 3", f"keep_deprecated: {keep}")
    assert f"keep_deprecated: {keep}" in text and "required: []" in text
    path.write_text(text)
    git(reg, "commit", "-q", "-am", f"keep {keep} deprecated versions, no required stages")


def serve_in_turn(reg, tmp_path, name: str, count: int, env=None) -> list[str]:
    """Register `count` versions and make each active in turn: all but the last end deprecated."""
    versions = [f"1.0.{i}" for i in range(count)]
    for i, version in enumerate(versions):
        draft = tmp_path / f"{name}-{version}.yaml"
        draft.write_text(bundle_text(name, version, versions[i - 1] if i else None, 0.1 + i / 100))
        assert run_cli("register", draft, cwd=reg, env=env).returncode == 0
        out = run_cli("promote", name, version, "--to", "active", cwd=reg, env=env)
        assert out.returncode == 0, out.stderr
    return versions


@pytest.fixture
def reg(tmp_path):
    return new_registry(tmp_path / "reg")


def test_gc_archives_what_retention_lets_go_in_one_commit_and_keeps_bundles(reg, tmp_path):
    configure(reg, keep=2)
    versions = serve_in_turn(reg, tmp_path, NAME, 6)  # 1.0.0-1.0.4 deprecated, 1.0.5 active
    before = git(reg, "rev-parse", "HEAD").strip()

    out = run_cli("gc", cwd=reg)
    assert out.returncode == 0, out.stderr
    assert git(reg, "rev-list", "--count", f"{before}..HEAD").strip() == "1"  # one commit
    assert "support-agent: archived 1.0.0, 1.0.1, 1.0.2" in out.stderr
    subject = git(reg, "log", "-1", "--format=%s").strip()
    assert subject == "modelctl: gc: archive 3 deprecated versions of support-agent"
    said = git(reg, "log", "-1", "--format=%(trailers:only,unfold)")
    assert "Modelctl-Action: gc" in said and "Modelctl-Archived: support-agent 1.0.0..1.0.2" in said
    assert "Modelctl-From: deprecated" in said and "Modelctl-To: archived" in said
    event = json.loads(run_cli("log", NAME, "--json", "--limit", "1", cwd=reg).stdout)["events"][0]
    assert (event["action"], event["from"], event["to"]) == ("gc", "deprecated", "archived")
    changed = git(reg, "show", "--name-only", "--format=", "HEAD").split()
    assert changed == [f"deployments/{NAME}.yaml"]  # bundles stay: history is immutable
    for version in versions:
        assert (reg / "bundles" / NAME / f"{version}.yaml").exists()
    # GTO's deregistration tag for each archived version, on the registration commit
    assert git(reg, "tag", "-l", f"{NAME}@v*!").split() == [f"{NAME}@v1.0.{i}!" for i in range(3)]
    dep = (reg / "deployments" / f"{NAME}.yaml").read_text()
    assert 'archived:\n  - "1.0.0..1.0.2"' in dep  # the versions map stays small: runs
    status = json.loads(run_cli("show", NAME, "--json", cwd=reg).stdout)
    by = {row["version"]: row["status"] for row in status["versions"]}
    assert [by[v] for v in versions] == ["archived"] * 3 + ["deprecated", "deprecated", "active"]
    assert run_cli("check", cwd=reg).returncode == 0  # a legal move, judged like any other

    again = run_cli("gc", cwd=reg)
    assert again.returncode == 0 and "already done: nothing to archive" in again.stdout
    assert git(reg, "rev-list", "--count", f"{before}..HEAD").strip() == "1"


def test_gc_dry_run_and_json(reg, tmp_path):
    from test_output_schemas import assert_valid

    configure(reg, keep=1)
    serve_in_turn(reg, tmp_path, NAME, 4)
    before = repo_state(reg)
    out = run_cli("gc", "--dry-run", cwd=reg)
    assert out.returncode == 0 and out.stdout == "would archive 2 deprecated of support-agent: 1.0.0, 1.0.1\n"
    assert repo_state(reg) == before
    doc = json.loads(run_cli("gc", NAME, "--dry-run", "--json", cwd=reg).stdout)
    assert_valid("gc", doc)
    assert doc["noop"] is True and doc["result"] == {"keep_deprecated": 1, "dry_run": True,
                                                      "archived": {NAME: ["1.0.0", "1.0.1"]}}
    assert repo_state(reg) == before
    doc = json.loads(run_cli("gc", "--json", "--reason", "quarterly clean-up", cwd=reg).stdout)
    assert_valid("gc", doc)
    assert doc["result"]["archived"] == {NAME: ["1.0.0", "1.0.1"]} and doc["commit"]
    assert doc["tags"] == [f"{NAME}@v1.0.0!", f"{NAME}@v1.0.1!"]
    assert "Modelctl-Reason: quarterly clean-up" in git(reg, "log", "-1", "--format=%B")


def test_gc_of_every_model_is_one_commit(reg, tmp_path):
    configure(reg, keep=1)
    serve_in_turn(reg, tmp_path, NAME, 3)
    serve_in_turn(reg, tmp_path, "search-ranker", 4)
    before = git(reg, "rev-parse", "HEAD").strip()
    assert run_cli("gc", cwd=reg).returncode == 0
    assert git(reg, "rev-list", "--count", f"{before}..HEAD").strip() == "1"
    assert sorted(git(reg, "show", "--name-only", "--format=", "HEAD").split()) == [
        "deployments/search-ranker.yaml", f"deployments/{NAME}.yaml"]
    said = git(reg, "log", "-1", "--format=%(trailers:only,unfold)")
    assert "Modelctl-Archived: search-ranker 1.0.0..1.0.1" in said and f"Modelctl-Archived: {NAME} 1.0.0" in said


def test_a_policy_that_would_archive_the_rollback_target_is_refused_and_nothing_is_written(reg, tmp_path):
    configure(reg, keep=0)
    serve_in_turn(reg, tmp_path, NAME, 3)  # previous: 1.0.1
    before = repo_state(reg)
    out = run_cli("gc", cwd=reg)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "would archive 1.0.1, the rollback target of support-agent" in out.stderr
    assert "set retention.keep_deprecated to at least 1" in out.stderr
    assert repo_state(reg) == before


@pytest.mark.parametrize("args, message", [
    (("Not_A_Name",), "model name"),
    (("nobody",), "no model named 'nobody'"),
])
def test_gc_bad_input_writes_nothing(reg, tmp_path, args, message):
    configure(reg, keep=1)
    serve_in_turn(reg, tmp_path, NAME, 3)
    before = repo_state(reg)
    out = run_cli("gc", *args, cwd=reg)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert repo_state(reg) == before


def test_rollback_warns_when_its_target_is_past_the_hot_standby_window(reg, tmp_path):
    configure(reg, keep=3)
    old = {"GIT_AUTHOR_DATE": "2026-01-05T10:00:00Z", "GIT_COMMITTER_DATE": "2026-01-05T10:00:00Z"}
    serve_in_turn(reg, tmp_path, NAME, 2, env=old)  # 1.0.1 made active on 5 January: long ago
    out = run_cli("rollback", NAME, "--from", "1.0.1", "--reason", "bad answers", cwd=reg)
    assert out.returncode == 0, out.stderr
    assert "warning: 1.0.0 of support-agent has not served since 2026-01-05T10:00:00Z" in out.stderr
    assert "beyond the 72 h hot-standby window" in out.stderr


def test_rollback_within_the_window_does_not_warn(reg, tmp_path):
    configure(reg, keep=3)
    serve_in_turn(reg, tmp_path, NAME, 2)
    out = run_cli("rollback", NAME, "--from", "1.0.1", "--reason", "bad answers", cwd=reg)
    assert out.returncode == 0 and "warning" not in out.stderr
