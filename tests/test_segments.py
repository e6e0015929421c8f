"""Issue 15 §2 and §3: canaries limited to caller segments, and rollbacks that say what changed.

Real registries (modelctl init in tmp dirs), the real CLI in a subprocess for the behaviour a user
sees, the Python API to set up the states in between.
"""
from __future__ import annotations

import json

import pytest
from conftest import bundle_text, git, new_registry, repo_state, run_cli

import modelctl
from modelctl import routing, segments, serving

NAME = "support-agent"


def rendered(reg_path, name=NAME) -> dict:
    """The routing document inside the model's rendered ConfigMap at HEAD."""
    text = git(reg_path, "show", f"HEAD:rendered/modelctl-{name}.yaml")
    body = text.split(": |\n", 1)[1]
    return json.loads("\n".join(line[4:] for line in body.splitlines()))


def deployment(reg_path, name=NAME) -> str:
    return git(reg_path, "show", f"HEAD:deployments/{name}.yaml")


def head_trailers(reg_path) -> str:
    return git(reg_path, "log", "-1", "--format=%(trailers:only,unfold)")


def _register(reg, drafts, **fields):
    f = drafts / f"{fields['version']}.yaml"
    f.write_text(bundle_text(**fields))
    reg.register(f)


@pytest.fixture
def lineage(tmp_path):
    """1.0.0; its children 1.0.1 (prompt only), 1.0.2 (config only) and 1.1.0 (model only); and
    1.0.3, a child of 1.0.1 that changes the config (prompt and config both differ from 1.0.0).
    1.0.0 is active."""
    reg = modelctl.Registry(new_registry(tmp_path / "reg"))
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    _register(reg, drafts, version="1.0.0")
    _register(reg, drafts, version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt")
    _register(reg, drafts, version="1.0.2", parent="1.0.0", temperature=0.5)
    _register(reg, drafts, version="1.1.0", parent="1.0.0", model_id="gpt-4.1-2025-04-14")
    _register(reg, drafts, version="1.0.3", parent="1.0.1", prompt="prompts/p2.txt", temperature=0.7)
    reg.promote(NAME, "1.0.0", "staging")
    reg.promote(NAME, "1.0.0", "active")
    return reg


def _to_canary(reg, version, pct=10):
    reg.promote(NAME, version, "staging")
    reg.shadow(NAME, version, 5)
    reg.canary(NAME, version, pct)


# -- §3 config-only rollback ----------------------------------------------------------------------

@pytest.mark.parametrize(("version", "kind", "redeploy"), [
    ("1.0.1", "prompt", False),
    ("1.0.2", "config", False),
    ("1.1.0", "model", True),
    ("1.0.3", "prompt,config", False),  # not the active's child: every variable that differs
])
def test_a_canary_rollback_says_what_changed(lineage, version, kind, redeploy):
    _to_canary(lineage, version)
    root = lineage.root
    result = run_cli("rollback", NAME, "--reason", "error rate", cwd=root)
    assert result.returncode == 0, result.stderr
    what = "the model changed: gateways redeploy or warm it" if redeploy else "no model changes: no redeploy or warm-up needed"
    assert f"change {version} -> 1.0.0: {kind} ({what})\n" in result.stderr
    assert f"Modelctl-Change: {kind}\n" in head_trailers(root)
    change = {"from": version, "to": "1.0.0", "kind": kind, "redeploy": redeploy}
    assert rendered(root)["change"] == change
    assert json.loads(run_cli("resolve", NAME, "--json", cwd=root).stdout)["change"] == change
    # the serving client loads the rendered document with its new key
    doc_file = root.parent / "doc.json"
    doc_file.write_text(json.dumps(rendered(root)))
    assert serving.Router.from_file(doc_file).pick(NAME, "user-1").version == "1.0.0"
    assert run_cli("check", cwd=root).returncode == 0


def test_an_active_rollback_to_the_parent_names_one_change(lineage):
    root = lineage.root
    _to_canary(lineage, "1.0.2")
    lineage.promote(NAME, "1.0.2", "active")
    result = run_cli("rollback", NAME, "--from", "1.0.2", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["result"]["change"] == {"from": "1.0.2", "to": "1.0.0", "kind": "config", "redeploy": False}
    assert "Modelctl-Change: config\n" in head_trailers(root)
    assert 'change:\n  from: "1.0.2"\n  to: "1.0.0"\n  kind: config\n  redeploy: false\n' in deployment(root)


def test_the_next_lifecycle_write_clears_the_change(lineage):
    root = lineage.root
    _to_canary(lineage, "1.0.1")
    lineage.rollback(NAME)
    assert "change" in rendered(root)
    lineage.promote(NAME, "1.0.2", "staging")
    lineage.shadow(NAME, "1.0.2", 5)
    assert "change" not in rendered(root)
    assert "change:" not in deployment(root)
    assert run_cli("check", cwd=root).returncode == 0


def test_a_deployment_without_a_rollback_has_no_change_key(lineage):
    doc = json.loads(run_cli("resolve", NAME, "--json", cwd=lineage.root).stdout)
    assert "change" not in doc and "change" not in rendered(lineage.root)
