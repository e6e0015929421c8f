"""register: every rule of DESIGN §2, one commit with trailers and a registration tag, nothing written on refusal."""

import pytest
import yaml as pyyaml
from conftest import ROOT, bundle_text, git, repo_state, run_cli

from modelctl import bundle as bundlemod


def trailers(repo, rev="HEAD") -> dict:
    text = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_register_commits_bundle_deployment_and_tag(registry, write_bundle):
    f = write_bundle(version="1.0.0")
    proc = run_cli("register", f, "-m", "first cut", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "registered support-agent 1.0.0" in proc.stdout
    # one commit touching only the bundle and the deployment file
    changed = git(registry, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(changed) == ["bundles/support-agent/1.0.0.yaml", "deployments/support-agent.yaml"]
    assert git(registry, "log", "-1", "--format=%s").strip() == "modelctl: register support-agent 1.0.0"
    assert "first cut" in git(registry, "log", "-1", "--format=%b")
    t = trailers(registry)
    assert t["Modelctl-Action"] == "register" and t["Modelctl-Model"] == "support-agent"
    assert t["Modelctl-Version"] == "1.0.0"
    # annotated registration tag on that commit
    assert git(registry, "cat-file", "-t", "support-agent@v1.0.0").strip() == "tag"
    assert git(registry, "rev-parse", "support-agent@v1.0.0^{commit}") == git(registry, "rev-parse", "HEAD")
    # prompt hash filled in; files read back identically with a YAML 1.1 reader
    text = (registry / "bundles/support-agent/1.0.0.yaml").read_text()
    data = pyyaml.safe_load(text)
    import hashlib
    assert data["prompt"]["sha256"] == hashlib.sha256(b"You are helpful.\n").hexdigest()
    assert data["version"] == "1.0.0"
    dep = pyyaml.safe_load((registry / "deployments/support-agent.yaml").read_text())
    # a registered version is implicit (README "Many versions"): the bundle says it exists
    assert dep["versions"] == {} and dep["active"] is None
    # the work tree is clean: the user's checkout follows the commit
    assert git(registry, "status", "--porcelain") == ""


def test_register_patch_change_records_parent_and_change(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    proc = run_cli("register", write_bundle("c.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt"),
                   cwd=registry)
    assert proc.returncode == 0, proc.stderr
    t = trailers(registry)
    assert t["Modelctl-Parent"] == "1.0.0" and t["Modelctl-Change"] == "prompt" and t["Modelctl-Semver"] == "patch"


def test_bump_computes_the_version(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    f = write_bundle("c.yaml", version="9.9.9", parent="1.0.0", model_id="gpt-4.1-2025-04-14")
    proc = run_cli("register", f, "--bump", "major", "--json", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert '"version": "2.0.0"' in proc.stdout
    assert (registry / "bundles/support-agent/2.0.0.yaml").exists()


REFUSALS = [
    # (description, bundle fields or raw text, expected message fragment)
    ("float version", {"raw": bundle_text().replace('version: "1.0.0"', "version: 1.10")}, '1.10 is read as a float'),
    ("alias model id", {"model_id": "latest"}, "alias"),
    ("-latest suffix", {"model_id": "gpt-4o-latest"}, "alias"),
    (":latest suffix", {"model_id": "llama3:latest"}, "alias"),
    ("undated openai id", {"model_id": "gpt-4.1-mini"}, "not a pinned openai snapshot"),
    ("missing prompt", {"prompt": "prompts/nope.txt"}, "does not exist"),
    ("prompt outside repo", {"prompt": "../outside.txt"}, "inside the registry"),
    ("absolute prompt", {"prompt": "/etc/passwd"}, "inside the registry"),
    ("unknown field", {"raw": bundle_text() + "surprise: 1\n"}, "unknown field"),
    ("anchor", {"raw": bundle_text().replace("temperature: 0.3", "temperature: &t 0.3\n  top_p: *t")}, "anchor"),
    ("bad name", {"name": "Support_Agent"}, "invalid model name"),
    ("error rate > 1", {"error_rate": 1.5}, "error_rate"),
]


@pytest.mark.parametrize("desc, fields, fragment", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_exit_2_and_write_nothing(registry, tmp_path, desc, fields, fragment):
    (tmp_path / "outside.txt").write_text("secret prompt")
    f = tmp_path / "in.yaml"
    f.write_text(fields["raw"] if "raw" in fields else bundle_text(**fields))
    before = repo_state(registry)
    proc = run_cli("register", f, cwd=registry)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert fragment in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert repo_state(registry) == before


def test_symlinked_prompt_is_refused(registry, tmp_path):
    (tmp_path / "target.txt").write_text("x")
    (registry / "prompts" / "link.txt").symlink_to(tmp_path / "target.txt")
    f = tmp_path / "in.yaml"
    f.write_text(bundle_text(prompt="prompts/link.txt"))
    before = repo_state(registry)
    proc = run_cli("register", f, cwd=registry)
    assert proc.returncode == 2 and "symlink" in proc.stderr
    assert repo_state(registry) == before


def test_existing_version_is_immutable(registry, write_bundle):
    f = write_bundle(version="1.0.0")
    assert run_cli("register", f, cwd=registry).returncode == 0
    g = write_bundle("g.yaml", version="1.0.0", temperature=0.9)
    before = repo_state(registry)
    proc = run_cli("register", g, cwd=registry)
    assert proc.returncode == 2 and "exists" in proc.stderr and "immutable" in proc.stderr
    assert repo_state(registry) == before


@pytest.mark.parametrize("fields, fragment", [
    ({"version": "1.0.1", "prompt": "prompts/p2.txt", "temperature": 0.9}, "changes prompt and config"),
    ({"version": "1.0.1", "model_id": "gpt-4.1-mini-2025-06-01"}, "needs a minor bump"),
    ({"version": "1.1.0", "provider": "anthropic", "model_id": "claude-sonnet-4-5-20250929"}, "needs a major bump"),
    ({"version": "1.1.0", "model_id": "o3-2025-04-16"}, "needs a major bump"),  # family change: gpt -> o
    ({"version": "0.9.0", "temperature": 0.5}, "must be greater than its parent"),
])
def test_one_variable_and_semver_rules(registry, write_bundle, fields, fragment):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    f = write_bundle("c.yaml", parent="1.0.0", **fields)
    before = repo_state(registry)
    proc = run_cli("register", f, cwd=registry)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert repo_state(registry) == before


def test_allow_multi_change_is_recorded(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    f = write_bundle("c.yaml", version="1.0.1", parent="1.0.0", prompt="prompts/p2.txt", temperature=0.9)
    proc = run_cli("register", f, "--allow-multi-change", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert trailers(registry)["Modelctl-Multi-Change"] == "allowed"


def test_new_prompt_file_is_committed_with_the_bundle(registry, write_bundle):
    (registry / "prompts" / "new.txt").write_text("Brand new prompt.\n")
    proc = run_cli("register", write_bundle(prompt="prompts/new.txt"), cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "prompts/new.txt" in git(registry, "show", "--name-only", "--format=", "HEAD").split()


def test_message_is_one_line_without_control_or_trailer_lookalikes(registry, write_bundle):
    msg = "fix\nModelctl-Action: promote\x1b[31m\u202e"
    proc = run_cli("register", write_bundle(), "-m", msg, cwd=registry)
    assert proc.returncode == 0, proc.stderr
    t = trailers(registry)
    assert t["Modelctl-Action"] == "register"
    body = git(registry, "log", "-1", "--format=%b")
    assert "\x1b" not in body and "\u202e" not in body


def test_dirty_deployment_file_is_not_overwritten(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0"), cwd=registry).returncode == 0
    dep = registry / "deployments/support-agent.yaml"
    dep.write_text(dep.read_text() + "# my local note\n")
    before = repo_state(registry)
    proc = run_cli("register", write_bundle("c.yaml", version="1.0.1", parent="1.0.0", temperature=0.5), cwd=registry)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: deployments/support-agent.yaml has uncommitted changes")
    assert repo_state(registry) == before


def test_prompt_with_uncommitted_edits_is_refused(registry, write_bundle):
    (registry / "prompts" / "p1.txt").write_text("edited but not committed\n")
    before = repo_state(registry)
    proc = run_cli("register", write_bundle(), cwd=registry)
    assert proc.returncode == 2 and "prompts/p1.txt has uncommitted changes" in proc.stderr
    assert repo_state(registry) == before


# Semantic versioning as practitioners mean it: a new version of the same model line is MINOR, another
# line or another provider is MAJOR. Real provider ids; the same table is in docs/reference.md.
SEMVER_TABLE = [
    # provider (parent -> child), parent id, child id, level
    ("openai", "gpt-4-0613", "gpt-4.1-2025-04-14", "minor"),
    ("openai", "gpt-4.1-mini-2025-04-14", "gpt-4.1-2025-04-14", "minor"),
    ("openai", "gpt-3.5-turbo-0125", "gpt-4-0613", "minor"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "minor"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "minor"),
    ("openai", "gpt-4.1-2025-04-14", "gpt-5-2025-08-07", "minor"),
    ("openai", "gpt-4o-2024-08-06", "o3-2025-04-16", "major"),
    ("openai", "o1-2024-12-17", "o3-2025-04-16", "minor"),
    ("openai", "o3-mini-2025-01-31", "o4-mini-2025-04-16", "minor"),
    ("openai", "gpt-5-mini-2025-08-07", "o4-mini-2025-04-16", "major"),
    ("openai", "ft:gpt-4o-mini-2024-07-18:acme::9xYz1AbC", "gpt-4o-mini-2024-07-18", "minor"),
    ("anthropic", "claude-3-5-sonnet-20241022", "claude-sonnet-4-5-20250929", "minor"),
    ("anthropic", "claude-2.1", "claude-3-opus-20240229", "minor"),
    ("anthropic", "claude-3-7-sonnet-20250219", "claude-sonnet-4-20250514", "minor"),
    ("anthropic", "claude-3-haiku-20240307", "claude-3-5-haiku-20241022", "minor"),
    ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-5-20251101", "minor"),
    ("google", "gemini-1.5-pro-002", "gemini-2.0-flash-001", "minor"),
    ("google", "gemini-2.0-flash-001", "gemini-2.5-pro", "minor"),
    ("huggingface", "meta-llama/Llama-2-70b-chat-hf", "meta-llama/Meta-Llama-3-70B-Instruct", "minor"),
    ("huggingface", "meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "minor"),
    ("bedrock", "meta.llama3-1-70b-instruct-v1:0", "mistral.mistral-large-2407-v1:0", "major"),
    ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "us.anthropic.claude-sonnet-4-20250514-v1:0", "minor"),
    ("mistral", "mistral-large-2407", "mistral-large-2411", "minor"),
    ("mistral", "mistral-large-2411", "mistral-small-2503", "minor"),
    ("mistral", "mistral-small-2503", "open-mixtral-8x22b", "major"),
    ("mistral", "mistral-large-2411", "codestral-2501", "major"),
    ("alibaba", "qwen2.5-72b-instruct", "qwen3-235b-a22b", "minor"),
    ("deepseek", "deepseek-chat", "deepseek-reasoner", "major"),
    ("cohere", "command-r-08-2024", "command-r-plus-08-2024", "minor"),
    ("openrouter", "openai/gpt-4.1", "anthropic/claude-sonnet-4.5", "major"),
    ("openai -> anthropic", "gpt-4.1-2025-04-14", "claude-sonnet-4-5-20250929", "major"),
]


def _model(provider: str, ident: str) -> dict:
    return {"provider": provider, "id": ident}


@pytest.mark.parametrize("provider, parent_id, child_id, level", SEMVER_TABLE)
def test_semver_table_of_real_model_ids(provider, parent_id, child_id, level):
    before, _, after = provider.partition(" -> ")
    parent = {"model": _model(before, parent_id), "prompt": {"template": "p.txt"}}
    child = {"model": _model(after or before, child_id), "prompt": {"template": "p.txt"}}
    change = bundlemod.classify(parent, child)
    assert change.kinds == ["model"] and change.level == level, change.detail


def test_semver_table_is_the_documented_one():
    doc = (ROOT / "docs" / "reference.md").read_text()
    rows = {tuple(cell.strip().strip("`") for cell in line.strip("|").split("|"))
            for line in doc.splitlines() if line.startswith("| ") and line.count("|") == 5}
    for provider, parent_id, child_id, level in SEMVER_TABLE:
        assert (provider, parent_id, child_id, level.upper()) in rows, (parent_id, child_id)


def test_explicit_family_overrides_the_derived_one():
    same = {"provider": "openai", "family": "openai-chat"}
    change = bundlemod.classify({"model": {**same, "id": "gpt-4o-2024-08-06"}, "prompt": {"template": "p"}},
                                {"model": {**same, "id": "o3-2025-04-16"}, "prompt": {"template": "p"}})
    assert change.level == "minor"
    change = bundlemod.classify(
        {"model": {"provider": "openai", "id": "gpt-4.1-mini-2025-04-14", "family": "gpt-4.1-mini"},
         "prompt": {"template": "p"}},
        {"model": {"provider": "openai", "id": "gpt-4.1-2025-04-14", "family": "gpt-4.1"}, "prompt": {"template": "p"}})
    assert change.level == "major" and change.detail == ["model family gpt-4.1-mini -> gpt-4.1"]


def test_bump_follows_the_model_line(registry, write_bundle):
    assert run_cli("register", write_bundle(version="1.0.0", model_id="gpt-4o-2024-08-06"),
                   cwd=registry).returncode == 0
    # GPT-4o -> GPT-4.1: the same line, a minor bump is enough
    f = write_bundle("c.yaml", version="9.9.9", parent="1.0.0", model_id="gpt-4.1-2025-04-14")
    proc = run_cli("register", f, "--bump", "minor", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "registered support-agent 1.1.0" in proc.stdout
    assert trailers(registry)["Modelctl-Semver"] == "minor"
    # GPT-4.1 -> o3: another line, a minor bump is refused and nothing is written
    g = write_bundle("d.yaml", version="9.9.9", parent="1.1.0", model_id="o3-2025-04-16")
    before = repo_state(registry)
    proc = run_cli("register", g, "--bump", "minor", cwd=registry)
    assert proc.returncode == 2
    assert "but the change (model family gpt -> o) needs a major bump" in proc.stderr, proc.stderr
    assert repo_state(registry) == before
    proc = run_cli("register", g, "--bump", "major", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "registered support-agent 2.0.0" in proc.stdout


def test_a_prompt_digest_placeholder_is_refused_with_what_to_do(registry, write_bundle):
    f = write_bundle()
    f.write_text(f.read_text().replace("  template: prompts/p1.txt\n", "  template: prompts/p1.txt\n  sha256: 9f2c...\n"))
    before = repo_state(registry)
    proc = run_cli("register", f, cwd=registry)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {f}:10: prompt.sha256 is filled in by register: remove it or give the full "
                           "hex digest\n")
    assert repo_state(registry) == before


def test_uncommitted_config_says_the_committed_one_is_used(registry, write_bundle):
    config = registry / "modelctl.yaml"
    committed = config.read_text()
    config.write_text(committed.replace("budget_per_day: 100.0", "budget_per_day: 5.0"))
    proc = run_cli("register", write_bundle(), cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "note: modelctl.yaml has uncommitted changes; using the committed version (commit it first)\n"
    # an error in the committed file says it is the committed one, not the file the user is looking at
    config.write_text(committed.replace("budget_per_day: 100.0", "budget_per_day: -5"))
    git(registry, "commit", "-q", "-am", "a bad budget")
    config.write_text(committed)
    before = repo_state(registry)
    proc = run_cli("register", write_bundle("c.yaml", version="1.0.1", parent="1.0.0", temperature=0.5), cwd=registry)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: modelctl.yaml:")
    assert proc.stderr.endswith("(in the committed modelctl.yaml; yours has uncommitted changes: commit them)\n")
    assert repo_state(registry) == before
    # nothing to say when the work tree matches
    git(registry, "checkout", "-q", "--", "modelctl.yaml")
    assert run_cli("status", cwd=registry).stderr == ""
