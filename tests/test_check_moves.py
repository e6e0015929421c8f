"""`check --changed-since`: a deployment change that reaches main by hand or through a pull request
is judged with the lifecycle rules the commands use (state.judge_move), commit by commit, and fails
with its rule and file:line unless the commit records an override with a reason."""
from __future__ import annotations

import json

import pytest
from conftest import git, new_registry, register_chain, repo_state, run_cli
from lifecyclekit import isolated_env

from modelctl import yamlio
from modelctl.registry import Registry

NAME = "support-agent"
DEP = f"deployments/{NAME}.yaml"
OVERRIDE = "\n\nModelctl-Force: true\nModelctl-Reason: incident 42, approved by on-call"


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """main: 1.0.0 active; 1.0.1 rolled back from canary (on hold); 1.0.2 in shadow; 1.0.3 in staging."""
    with isolated_env(tmp_path_factory):
        base = tmp_path_factory.mktemp("moves")
        reg = Registry(new_registry(base / "reg"))
        register_chain(reg, base)
        reg.promote(NAME, "1.0.0", "staging")
        reg.promote(NAME, "1.0.0", "active")
        reg.promote(NAME, "1.0.1", "staging")
        reg.shadow(NAME, "1.0.1", 10)
        reg.canary(NAME, "1.0.1", 5)
        reg.rollback(NAME, reason="error rate doubled")
        reg.promote(NAME, "1.0.2", "staging")
        reg.shadow(NAME, "1.0.2", 10)
        reg.promote(NAME, "1.0.3", "staging")
        return reg.root


@pytest.fixture
def repo(origin, tmp_path):
    """A fresh clone of main on a branch `edit` (the pull request)."""
    dest = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(dest))
    git(dest, "checkout", "-q", "-b", "edit")
    return dest


def hand_edit(repo, change, message="edit the deployment by hand"):
    """Change deployments/support-agent.yaml as a person would, and commit it with `message`."""
    path = repo / DEP
    text = path.read_text()
    data = yamlio.loads(text, DEP).data
    change(data)
    path.write_text(yamlio.dumps(data, text))
    git(repo, "commit", "-q", "-am", message)
    # then as check says: rendered/ follows the deployment (a commit of its own, not judged as a move)
    proc = run_cli("render", "--write", cwd=repo)
    assert proc.returncode == 0, proc.stderr


def line_of(repo, version) -> int:
    lines = (repo / DEP).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(f'"{version}"'))


def checked(repo):
    before = repo_state(repo)
    text = run_cli("check", "--changed-since", "main", cwd=repo)
    doc = json.loads(run_cli("check", "--changed-since", "main", "--format", "json", cwd=repo).stdout)
    assert repo_state(repo) == before  # check only reads
    moves = [f for f in doc["findings"] if "lifecycle rule" in f["message"]]
    return text, moves


def serve_held(d):
    d["versions"]["1.0.1"] = "canary"
    d["canary"] = {"version": "1.0.1", "percent": 5}


def skip_canary(d):
    d["versions"].update({"1.0.0": "deprecated", "1.0.2": "active"})
    d.update(active="1.0.2", previous="1.0.0", shadow=None)


def two_canaries(d):
    d["versions"].update({"1.0.2": "canary", "1.0.3": "canary"})
    d.update(canary={"version": "1.0.2", "percent": 5}, shadow=None)


CASES = [
    ("hold", serve_held, "1.0.1", "1.0.1 of support-agent is on hold after a rollback"),
    ("skipped-stage", skip_canary, "1.0.2", "1.0.2 of support-agent is shadow; promote it to canary first"),
    ("one-canary", two_canaries, "1.0.3", "support-agent has 2 versions in canary (1.0.2, 1.0.3); one canary per model"),
]


@pytest.mark.parametrize("rule, change, version, says", CASES, ids=[c[0] for c in CASES])
def test_an_illegal_hand_edit_fails_with_its_rule_and_file_line(repo, rule, change, version, says):
    hand_edit(repo, change)
    if rule != "one-canary":  # two canary statuses are also inconsistent with the file's single canary slot
        assert run_cli("check", cwd=repo).returncode == 0  # the file on its own is consistent
    proc, moves = checked(repo)
    assert proc.returncode == 1, proc.stdout
    [f] = moves
    assert (f["path"], f["line"], f["level"]) == (DEP, line_of(repo, version), "error")
    assert f["message"].startswith(f"lifecycle rule '{rule}': {says}")
    assert "'edit the deployment by hand'" in f["message"]  # the commit that made the move
    assert f"error: {DEP}:{line_of(repo, version)}: lifecycle rule '{rule}'" in proc.stdout


@pytest.mark.parametrize("rule, change, version, says", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_a_recorded_override_with_a_reason_lets_it_stand(repo, rule, change, version, says):
    hand_edit(repo, change, "serve it anyway" + OVERRIDE)
    proc, moves = checked(repo)
    assert proc.returncode == 0, proc.stdout
    [f] = moves
    assert f["level"] == "warning"
    assert f["message"].startswith(f"lifecycle rule '{rule}' overridden (incident 42, approved by on-call): {says}")


def test_force_never_relaxes_one_canary_per_model(repo):
    hand_edit(repo, two_canaries, "two at once" + OVERRIDE)
    proc, moves = checked(repo)
    assert proc.returncode == 1
    assert [f["level"] for f in moves] == ["error"] and "no override exists" in moves[0]["message"]


def test_an_override_without_a_reason_is_no_override(repo):
    hand_edit(repo, serve_held, "serve it\n\nModelctl-Force: true")
    proc, moves = checked(repo)
    assert proc.returncode == 1 and moves[0]["level"] == "error"


def test_each_commit_is_judged_so_legal_steps_pass_and_a_hand_step_among_them_fails(repo):
    for args in (["promote", NAME, "1.0.3", "--to", "shadow"],):
        assert run_cli(*args, cwd=repo).returncode == 2  # one shadow per model: 1.0.2 holds it
    assert run_cli("canary", NAME, "1.0.2", "--pct", "5", cwd=repo).returncode == 0
    assert run_cli("canary", NAME, "1.0.2", "--pct", "25", cwd=repo).returncode == 0
    assert run_cli("promote", NAME, "1.0.2", "--to", "active", cwd=repo).returncode == 0
    proc, moves = checked(repo)
    assert proc.returncode == 0 and moves == []  # shadow -> active over three commits, each legal
    hand_edit(repo, lambda d: d["versions"].update({"1.0.3": "active", "1.0.2": "deprecated"})
              or d.update(active="1.0.3", previous="1.0.2"), "ship 1.0.3")
    proc, moves = checked(repo)
    assert proc.returncode == 1
    assert [(f["line"], f["message"].split(":")[0]) for f in moves] == [
        (line_of(repo, "1.0.3"), "lifecycle rule 'skipped-stage'")]


def test_moves_backwards_and_odd_percents_are_refused_too(repo):
    hand_edit(repo, lambda d: d["versions"].update({"1.0.2": "staging"}) or d.update(shadow=None), "back")
    proc, moves = checked(repo)
    assert proc.returncode == 1
    assert moves[0]["message"].startswith("lifecycle rule 'illegal-move': 1.0.2 of support-agent is shadow, past "
                                          "staging; the lifecycle only moves forward")


def test_a_commit_that_left_the_file_unreadable_is_passed_over(repo):
    """A hand edit that broke the file, then one that repaired it: nothing between them to judge, and no crash."""
    text = (repo / DEP).read_text()
    (repo / DEP).write_text(text + "active: [unclosed\n")
    git(repo, "commit", "-q", "-am", "a broken hand edit")
    (repo / DEP).write_text("# repaired by hand\n" + text)
    git(repo, "commit", "-q", "-am", "repair it")
    proc, moves = checked(repo)
    assert proc.returncode == 0, proc.stderr
    assert "internal error" not in proc.stderr and moves == []
