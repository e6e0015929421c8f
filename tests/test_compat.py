"""Compatibility: a bundle's `compatibility:` needs against `platform:` in modelctl.yaml; canary
and promote refuse a mismatch (exit 2, nothing written) unless --force --reason, on record."""
from __future__ import annotations

import json

import pytest
from conftest import git, new_registry, repo_state, run_cli

from modelctl import compat

NAME = "support-agent"
PLATFORM = """
platform:
  embedding: {model: text-embedding-3-large, version: "1"}
  api_versions: ["2024-06-01", "2025-01-01"]
  accepts_breaking: []
  routes:
    search:
      embedding: {model: text-embedding-3-large, version: "2"}
      accepts_breaking: [citations-as-list]
"""


# -- the rules (pure) ---------------------------------------------------------------------------

def test_each_need_is_met_or_named():
    provides = {"embedding": {"model": "e", "version": "1"}, "api_versions": ["v9", "v10"], "accepts_breaking": ["x"]}
    assert compat.mismatches({"embedding": {"model": "e", "version": "1"}, "min_api_version": "v10",
                              "breaking_changes": ["x"]}, provides) == []
    found = compat.mismatches({"embedding": {"model": "e", "version": "2"}, "min_api_version": "v11",
                               "breaking_changes": ["x", "y"]}, provides)
    assert [m.need for m in found] == ["embedding", "min_api_version", "breaking_changes"]
    assert found[0].message == "needs embedding e@2 but the platform serves the index of e@1"
    assert found[1].message == "needs API version v11 or later but the platform serves v9, v10"
    assert "'y'" in found[2].message


def test_api_versions_compare_naturally_and_an_undeclared_platform_never_fits():
    assert compat.natural_key("v10") > compat.natural_key("v9")
    assert compat.natural_key("2025-01-01") > compat.natural_key("2024-12-31")
    assert compat.mismatches({"min_api_version": "2024-12-31"}, {"api_versions": ["2025-01-01"]}) == []
    assert [m.need for m in compat.mismatches({"min_api_version": "1", "embedding": {"model": "e", "version": "1"}},
                                              {})] == ["embedding", "min_api_version"]
    assert compat.mismatches(None, {}) == [] and compat.mismatches({}, {}) == []  # declares nothing: fits


def test_a_route_overrides_the_top_level_key_by_key():
    platform = {"embedding": {"model": "e", "version": "1"}, "api_versions": ["v2"],
                "routes": {"search": {"embedding": {"model": "e", "version": "2"}}}}
    needs = {"embedding": {"model": "e", "version": "2"}, "min_api_version": "v2"}
    found = compat.check(needs, platform, routes=["search", "chat"])  # chat: not declared, the default applies
    assert [(m.place, m.need) for m in found] == [("default", "embedding")]
    assert compat.place(platform, "search")["api_versions"] == ["v2"]


# -- the commands -------------------------------------------------------------------------------

def bundle(version: str, parent: str | None, compatibility: str = "", temperature: float = 0.2) -> str:
    parent_line = f'parent: "{parent}"\n' if parent else ""
    return (f'apiVersion: modelctl/v1\nkind: Bundle\nname: {NAME}\nversion: "{version}"\n{parent_line}'
            "model:\n  provider: openai\n  id: gpt-4.1-mini-2025-04-14\nprompt:\n  template: prompts/p1.txt\n"
            f"config:\n  temperature: {temperature}\n{compatibility}"
            "baseline:\n  error_rate: 0.01\n  requests: 10000\n")


NEEDS_V2 = 'compatibility:\n  embedding: {model: text-embedding-3-large, version: "2"}\n  min_api_version: "2025-01-01"\n'


@pytest.fixture
def reg(tmp_path):
    reg = new_registry(tmp_path / "reg")
    path = reg / "modelctl.yaml"
    text = path.read_text().replace("required: [staging, shadow, canary]", "required: []")
    start = text.index("\nplatform:\n")  # the template's own (empty) platform: section, replaced
    end = text.index("  routes: {}\n", start) + len("  routes: {}\n")
    path.write_text(text[:start] + PLATFORM + text[end:])
    git(reg, "commit", "-q", "-am", "platform, no required stages")
    for version, parent, needs, temp in (("1.0.0", None, "", 0.2), ("1.1.0", "1.0.0", NEEDS_V2, 0.3)):
        draft = tmp_path / f"{version}.yaml"
        draft.write_text(bundle(version, parent, needs, temp))
        out = run_cli("register", draft, cwd=reg)
        assert out.returncode == 0, out.stderr
    assert run_cli("promote", NAME, "1.0.0", "--to", "active", cwd=reg).returncode == 0
    return reg


def test_register_records_the_fit_at_registration(reg):
    said = git(reg, "log", "--format=%(trailers:only,unfold)", "-1", "--grep", "register support-agent 1.1.0")
    assert "Modelctl-Compat: needs embedding text-embedding-3-large@2 but the platform serves the index of " \
           "text-embedding-3-large@1" in said


@pytest.mark.parametrize("command", [("canary", NAME, "1.1.0", "--pct", "5"), ("promote", NAME, "1.1.0", "--to", "active")])
def test_canary_and_promote_refuse_an_incompatible_version_and_write_nothing(reg, command):
    before = repo_state(reg)
    out = run_cli(*command, cwd=reg)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert "support-agent 1.1.0 is not compatible with the platform: needs embedding text-embedding-3-large@2" \
           in out.stderr and "--force --reason" in out.stderr
    assert repo_state(reg) == before


def test_force_with_a_reason_overrides_on_record(reg):
    out = run_cli("canary", NAME, "1.1.0", "--pct", "5", "--force", "--reason", "index v2 rolls out today", cwd=reg)
    assert out.returncode == 0, out.stderr
    said = git(reg, "log", "-1", "--format=%(trailers:only,unfold)")
    assert "Modelctl-Compat-Override: index v2 rolls out today (needs embedding text-embedding-3-large@2" in said


def test_compat_prints_the_matrix_and_fails_when_a_serving_version_does_not_fit(reg, tmp_path):
    from test_output_schemas import assert_valid

    out = run_cli("compat", cwd=reg)
    assert out.returncode == 0, out.stderr  # the misfit 1.1.0 is only registered: not in the matrix
    assert "support-agent" in out.stdout and "declares no needs" in out.stdout
    assert "platform: embedding text-embedding-3-large@1; API versions 2024-06-01, 2025-01-01" in out.stderr
    run_cli("promote", NAME, "1.1.0", "--to", "staging", cwd=reg)
    doc = json.loads(run_cli("compat", NAME, "--json", cwd=reg).stdout)
    assert_valid("compat", doc)
    rows = {(r["version"], r["place"]): r for r in doc["rows"]}
    assert rows[("1.1.0", "default")]["compatible"] is False and rows[("1.1.0", "default")]["role"] == "staging"
    assert doc["ok"] is True  # a candidate that does not fit is shown, not a failure
    # the platform moves on under a serving version: compat fails (exit 1)
    path = reg / "modelctl.yaml"
    path.write_text(path.read_text().replace('["2024-06-01", "2025-01-01"]', '["2023-01-01"]'))
    git(reg, "commit", "-q", "-am", "old API only")
    assert run_cli("promote", NAME, "1.1.0", "--to", "active", "--force", "--reason", "test", cwd=reg).returncode == 0
    out = run_cli("compat", cwd=reg)
    assert out.returncode == 1 and "NO" in out.stdout and "needs API version 2025-01-01 or later" in out.stdout


def test_a_compatibility_block_against_the_schema_is_refused_at_register(reg, tmp_path):
    draft = tmp_path / "bad.yaml"
    draft.write_text(bundle("1.2.0", "1.1.0", "compatibility:\n  embedding: {model: x}\n", 0.4))
    before = repo_state(reg)
    out = run_cli("register", draft, cwd=reg)
    assert out.returncode == 2 and "compatibility.embedding" in out.stderr and "version" in out.stderr
    assert repo_state(reg) == before
