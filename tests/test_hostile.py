"""Hostile input (issue 11): each is one line on stderr, exit 2, nothing written, no secret echoed.

Pinning bypasses through a trailing newline, keys pasted into any field or option, non-finite and
enormous numbers, times outside what a datetime holds, branch names that shadow refs, a prompt
that differs from the remote's copy, a draft sitting where register writes.
"""
from __future__ import annotations

import json
import random
import string
import subprocess

import pytest
from conftest import ROOT, bundle_text, git, repo_state, run_cli
from gitremote import bare_remote

_rng = random.Random(20261130)
B62 = string.ascii_letters + string.digits


def fake_key(prefix: str = "sk-proj-", n: int = 56) -> str:
    """A random-looking key, made at run time so this file holds none."""
    while True:
        body = "".join(_rng.choice(B62) for _ in range(n))
        if any(c.isupper() for c in body) and any(c.islower() for c in body) and any(c.isdigit() for c in body):
            return prefix + body


def leaks(secret: str, text: str) -> bool:
    """Whether any 10 consecutive characters of the secret appear in text."""
    return any(secret[i:i + 10] in text for i in range(len(secret) - 9))


def refused(repo, *args, fragment: str = "", env=None, cwd=None):
    """Run the CLI and assert the contract for bad input: one error line, exit 2, nothing written."""
    before = repo_state(repo)
    proc = run_cli(*args, cwd=cwd or repo, env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "internal error" not in proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert repo_state(repo) == before
    return proc


def commit_by_hand(repo, path: str, text: str | bytes) -> None:
    """What a pull request merged without modelctl (or an old version of it) leaves behind."""
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", f"hand edit {path}")


# -- pinning bypass: `$` matches before a final newline --------------------------------------------

def _schema_patterns():
    for path in sorted((ROOT / "schemas").glob("*.json")):
        def walk(node, where, path=path):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "pattern" and isinstance(value, str):
                        yield path.name, where, value
                    else:
                        yield from walk(value, f"{where}/{key}", path)
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    yield from walk(value, f"{where}/{i}", path)
        yield from walk(json.loads(path.read_text()), "")


def test_every_schema_pattern_is_anchored_to_the_whole_string():
    found = list(_schema_patterns())
    assert len(found) >= 10
    for name, where, pattern in found:
        assert pattern.startswith("^") and pattern.endswith("$"), (name, where, pattern)


@pytest.mark.parametrize("kind, data, field", [
    ("Bundle", {"name": "sa\n"}, "name"),
    ("Bundle", {"version": "1.0.0\n"}, "version"),
    ("Bundle", {"model": {"provider": "mistral", "id": "mistral-large-2411\n"}}, "model.id"),
    ("Bundle", {"model": {"provider": "openai\n", "id": "gpt-4o-2024-08-06"}}, "model.provider"),
    ("Bundle", {"prompt": {"template": "prompts/p1.txt\n"}}, "prompt.template"),
    ("Bundle", {"prompt": {"template": "prompts/p1.txt", "sha256": "a" * 64 + "\n"}}, "prompt.sha256"),
    ("Bundle", {"fallbacks": [{"provider": "mistral", "id": "mistral-small-2409\n"}]}, "fallbacks[0].id"),
    ("Registry", {"metrics": {"token_env": "MODELCTL_METRICS_TOKEN\n"}}, "metrics.token_env"),
    ("Registry", {"remote": {"branch": "main\n"}}, "remote.branch"),
])
def test_a_trailing_newline_never_satisfies_a_schema_pattern(kind, data, field):
    from modelctl import schema, yamlio

    base = {"apiVersion": "modelctl/v1", "kind": kind}
    if kind == "Bundle":
        base.update(name="sa", version="1.0.0", model={"provider": "openai", "id": "gpt-4o-2024-08-06"},
                    prompt={"template": "prompts/p1.txt"}, baseline={"error_rate": 0.01, "requests": 10})
    base.update(data)
    found = schema.problems(yamlio.Document(base, "b.yaml", {}), kind)
    assert len(found) == 1 and f": {field}: " in found[0], found


@pytest.mark.parametrize("provider, model_id", [
    ("azure", "gpt-4o\\n"),
    ("mistral", "mistral-large-latest\\n"),
    ("openai", "gpt-4.1-mini-2025-04-14\\n"),
])
def test_register_refuses_a_model_id_with_a_trailing_newline(registry, tmp_path, provider, model_id):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(provider=provider, model_id=f'"{model_id}"'))
    proc = refused(registry, "register", f, fragment=f"{f}:7: model.id: ")
    assert "on one line" in proc.stderr


def test_register_refuses_a_template_with_a_trailing_newline(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(prompt='"prompts/p1.txt\\n"'))
    refused(registry, "register", f, fragment=f"{f}:9: prompt.template: 'prompts/p1.txt\\n' must be a relative path")


def test_check_flags_a_newline_id_in_a_bundle_already_committed(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(model_id="gpt-4.1-mini-2025-04-14"))
    assert run_cli("register", f, cwd=registry).returncode == 0
    path = "bundles/support-agent/1.0.0.yaml"
    text = (registry / path).read_text().replace("id: gpt-4.1-mini-2025-04-14", 'id: "gpt-4o\\n"')
    commit_by_hand(registry, path, text)
    proc = run_cli("check", "--format", "json", cwd=registry)
    assert proc.returncode == 1, proc.stderr
    found = [f for f in json.loads(proc.stdout)["findings"] if f["path"] == path]
    assert any("model.id" in f["message"] and f["line"] == 7 and f["level"] == "error" for f in found), found


# -- secrets printed in full ---------------------------------------------------------------------

PLACEMENTS = {
    # field -> how the key is written into an otherwise valid bundle (line it lands on)
    "name": ("name: support-agent\n", "name: {key}\n"),
    "version": ('version: "1.0.0"\n', "version: {key}\n"),
    "parent": ('version: "1.0.0"\n', 'version: "1.0.0"\nparent: {key}\n'),
    "model.provider": ("provider: openai\n", "provider: {key}\n"),
    "model.id": ("id: gpt-4.1-mini-2025-04-14\n", "id: {key}\n"),
    "model.id type": ("id: gpt-4.1-mini-2025-04-14\n", "id: [{key}]\n"),
    "model.family": ("id: gpt-4.1-mini-2025-04-14\n", "id: gpt-4.1-mini-2025-04-14\n  family: {key}\n"),
    "model unknown field": ("id: gpt-4.1-mini-2025-04-14\n", "id: gpt-4.1-mini-2025-04-14\n  api_key: {key}\n"),
    "unknown field name": ("kind: Bundle\n", "kind: Bundle\n{key}: 1\n"),
    "prompt.template": ("template: prompts/p1.txt\n", "template: prompts/{key}.txt\n"),
    "prompt.sha256": ("template: prompts/p1.txt\n", "template: prompts/p1.txt\n  sha256: {key}\n"),
    "config": ("max_tokens: 1024\n", "max_tokens: 1024\n  api_key: {key}\n"),
    "baseline type": ("requests: 12500\n", "requests: {key}\n"),
    "description": ("kind: Bundle\n", "kind: Bundle\ndescription: call with {key}\n"),
}


@pytest.mark.parametrize("field", list(PLACEMENTS))
def test_a_key_in_any_field_is_reported_at_the_users_line_and_never_echoed(registry, tmp_path, field):
    key = fake_key()
    old, new = PLACEMENTS[field]
    text = bundle_text()
    assert old in text
    text = text.replace(old, new.format(key=key), 1)
    f = tmp_path / "drafts" / "b.yaml"
    f.parent.mkdir()
    f.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if key in row)
    # the user's own relative path and line, not the bundles/... file register would have written
    proc = refused(registry, "register", "../../drafts/b.yaml", cwd=registry / "prompts",
                   fragment=f"error: ../../drafts/b.yaml:{line}: looks like a secret (OpenAI API key sk-p…(")
    assert not leaks(key, proc.stderr + proc.stdout)


@pytest.mark.parametrize("field", ["model unknown field", "unknown field name", "model.id type", "baseline type"])
def test_check_and_its_github_annotations_never_print_a_committed_key(registry, field):
    key = fake_key("sk-ant-api03-", 90)
    old, new = PLACEMENTS[field]
    commit_by_hand(registry, "bundles/support-agent/1.0.0.yaml", bundle_text().replace(old, new.format(key=key), 1))
    for fmt in ("github", "json"):
        proc = run_cli("check", "--format", fmt, cwd=registry)
        assert proc.returncode == 1, proc.stderr
        assert "sk-a…(" in proc.stdout or "sk-a\\u2026(" in proc.stdout  # JSON escapes the ellipsis
        assert not leaks(key, proc.stdout + proc.stderr), (fmt, proc.stdout)


def test_validation_messages_redact_a_key_that_is_not_a_secret_finding():
    from modelctl import schema, yamlio

    key = fake_key("gsk_", 52)
    data = {"apiVersion": "modelctl/v1", "kind": "Registry", key: 1, "remote": {"deadline": key}}
    found = schema.problems(yamlio.Document(data, "modelctl.yaml", {}), "Registry")
    assert len(found) == 2 and "unknown field(s)" in found[0] and "gsk_…(56 chars)" in found[0]
    assert not leaks(key, "\n".join(found))


def test_a_key_as_a_branch_name_is_refused_and_never_becomes_a_ref(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text())
    key = fake_key()
    proc = refused(registry, "register", f, "--branch", f"fix/{key}", fragment="--branch looks like a secret")
    assert not leaks(key, proc.stderr)
    assert not leaks(key, git(registry, "for-each-ref"))


@pytest.mark.parametrize("option", ["--message", "--reason"])
def test_a_key_in_a_reason_or_message_is_refused(registry, tmp_path, option):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text())
    key = fake_key("xai-", 80)
    if option == "--message":
        proc = refused(registry, "register", f, "-m", f"rotate {key}", fragment="looks like a secret")
    else:
        assert run_cli("register", f, cwd=registry).returncode == 0
        proc = refused(registry, "promote", "support-agent", "1.0.0", "--to", "staging", "--reason", key,
                       fragment="looks like a secret (xAI API key xai-…(84 chars))")
    assert not leaks(key, proc.stderr)


def test_an_unknown_option_value_echoed_by_an_error_is_redacted(registry):
    key = "sk-or-v1-" + "".join(_rng.choice("0123456789abcdef") for _ in range(63)) + "a"
    proc = refused(registry, "check", "--format", key, fragment="invalid --format 'sk-o…(73 chars)'")
    assert not leaks(key, proc.stderr)


# -- non-finite and enormous numbers -------------------------------------------------------------

@pytest.fixture
def registered(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text())
    assert run_cli("register", f, cwd=registry).returncode == 0
    return registry


@pytest.mark.parametrize("args", [
    ["shadow", "support-agent", "1.0.0", "--cost-per-request", "nan"],
    ["shadow", "support-agent", "1.0.0", "--cost-per-request", "-inf"],
    ["shadow", "support-agent", "1.0.0", "--requests-per-day", "nan"],
    ["shadow", "support-agent", "1.0.0", "--pct", "NaN"],
    ["canary", "support-agent", "1.0.0", "--pct", "nan"],
])
def test_non_finite_numbers_in_options_are_refused(registered, args):
    refused(registered, *args, fragment="must be a finite number")


def test_a_310_digit_integer_in_a_bundle_is_refused_at_load(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text().replace("requests: 12500", "requests: " + "9" * 310))
    proc = refused(registry, "register", f, fragment=f"{f}:17: 9999999999")
    assert "too large a number" in proc.stderr and "9" * 40 not in proc.stderr


@pytest.fixture
def serving(registered, tmp_path):
    """1.0.0 active, 1.0.1 in canary, 1.0.2 registered: every command has a bundle to read."""
    def run(*args):
        proc = run_cli(*args, cwd=registered)
        assert proc.returncode == 0, proc.stderr

    run("promote", "support-agent", "1.0.0", "--to", "active", "--force", "--reason", "test")
    for version, temperature in (("1.0.1", 0.5), ("1.0.2", 0.7)):
        f = tmp_path / f"b-{version}.yaml"
        f.write_text(bundle_text(version=version, parent="1.0.0", temperature=temperature))
        run("register", f)
    run("canary", "support-agent", "1.0.1", "--force", "--reason", "test")
    return registered


@pytest.mark.parametrize("command", [
    ["shadow", "support-agent", "1.0.2", "--force", "--reason", "test"],
    ["watch", "support-agent", "--once"],
    ["gate", "support-agent", "1.0.1"],
    ["resolve", "support-agent"],
])
def test_a_huge_integer_committed_by_hand_is_exit_2_for_every_command(serving, command):
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        path = f"bundles/support-agent/{version}.yaml"
        commit_by_hand(serving, path, (serving / path).read_text().replace("requests: 12500", "requests: " + "9" * 310))
    before = repo_state(serving)
    proc = run_cli(*command, cwd=serving)
    assert proc.returncode == 2 and "internal error" not in proc.stderr, proc.stderr
    assert "bundles/support-agent/1.0." in proc.stderr and "too large a number" in proc.stderr
    assert repo_state(serving) == before


# -- modelctl.yaml that passes check and then crashes every write ------------------------------------

@pytest.mark.parametrize("old, new, fragment", [
    ("  deadline: 30", "  deadline: 100000", "remote.deadline: 100000 is greater than the maximum of 3600"),
    ("  deadline: 30", "  deadline: 1.0e+300", "too large a number"),
    ("  deadline: 30", "  deadline: 99999999999999999999", "too large a number"),
    ("openai: '^.+-", "openai: '^(.+-", "pinning.providers.openai: "),
    ("  timeout: 5 ", "  timeout: 100000 ", "metrics.timeout: 100000 is greater than the maximum of 3600"),
    ("  interval: 30 ", "  interval: soon ", "analysis.interval"),
    ("  token_env: null", "  token_env: OPENAI_API_KEY", "must start with MODELCTL_METRICS_"),
])
def test_a_bad_registry_config_fails_check_and_refuses_every_write(registry, tmp_path, old, new, fragment):
    text = (registry / "modelctl.yaml").read_text()
    assert old in text, old
    commit_by_hand(registry, "modelctl.yaml", text.replace(old, new, 1))
    line = next(i for i, row in enumerate(text.splitlines(), 1) if old in row)
    proc = run_cli("check", "--format", "json", cwd=registry)
    assert proc.returncode == 1, proc.stderr
    findings = [f for f in json.loads(proc.stdout)["findings"] if f["path"] == "modelctl.yaml"]
    assert findings and findings[0]["line"] == line and fragment in findings[0]["message"], findings
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text())
    refused(registry, "register", f, fragment=f"modelctl.yaml:{line}: ")


def test_metrics_url_warning_names_the_new_host_and_line():
    from modelctl.config import metrics_url_warning

    base = (ROOT / "registry-template" / "modelctl.yaml").read_text()
    moved = base.replace("url: http://127.0.0.1:9108/metrics/{model}", "url: https://collector.example.net/{model}")
    moved = moved.replace("token_env: null", "token_env: MODELCTL_METRICS_TOKEN")
    line, message = metrics_url_warning(base, moved)
    assert moved.splitlines()[line - 1].strip().startswith("url: https://collector.example.net")
    assert "collector.example.net" in message and "MODELCTL_METRICS_TOKEN" in message
    assert metrics_url_warning(base, base + "\n") is None
    assert metrics_url_warning(base, "not: [valid") is None


# -- times, keys, branches, environment ---------------------------------------------------------

@pytest.mark.parametrize("at", ["@99999999999999999999", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01",
                                "@" + "9" * 5000, "2026-13-01"])
def test_which_refuses_times_outside_what_it_can_show(registered, at):
    refused(registered, "which", "support-agent", "--at", at, fragment="time")


def test_which_prints_four_digit_years(registered):
    proc = run_cli("which", "support-agent", "--at", "0001-01-01", "--json", cwd=registered)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["at"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("command", [["which", "support-agent", "--at", "now"], ["resolve", "support-agent"]])
def test_a_key_that_is_not_utf8_is_refused(registered, command):
    refused(registered, *command, "--key", "user-\udcff", fragment="--key is not valid UTF-8")


@pytest.mark.parametrize("branch, fragment", [
    ("@{-1}", "invalid branch name"),
    ("main@{1}", "invalid branch name"),
    ("@", "would shadow another ref"),
    ("HEAD", "would shadow another ref"),
    ("refs/heads/x", "would shadow another ref"),
    ("origin/main", "would shadow another ref"),
    ("origin", "would shadow another ref"),
    ("upstream/x", "would shadow another ref"),
    ("support-agent@v1.0.0", "is also a tag name"),
])
def test_branch_names_that_shadow_refs_are_refused(registered, tmp_path, branch, fragment):
    git(registered, "remote", "add", "upstream", str(tmp_path / "nowhere.git"))
    refused(registered, "promote", "support-agent", "1.0.0", "--to", "staging", "--branch", branch, fragment=fragment)


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "1e400"])
def test_a_bad_lock_timeout_is_refused(registered, value):
    refused(registered, "promote", "support-agent", "1.0.0", "--to", "staging", env={"MODELCTL_LOCK_TIMEOUT": value},
            fragment="MODELCTL_LOCK_TIMEOUT")


# -- prompts: the remote's copy, the size cap, a draft where register writes ----------------------

def test_register_push_refuses_to_pin_the_remotes_copy_of_a_prompt_edited_locally(registry, tmp_path):
    remote = tmp_path / "remote.git"
    bare_remote(registry, remote)
    (registry / "prompts" / "p1.txt").write_text("You are helpful, and brief.\n")
    git(registry, "commit", "-q", "-am", "shorter prompt")
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text())
    remote_refs = git(remote, "for-each-ref")
    proc = refused(registry, "register", f, "--push", fragment="prompts/p1.txt differs between your branch and the remote")
    assert "push the prompt first" in proc.stderr
    assert git(remote, "for-each-ref") == remote_refs
    # once pushed, what the user sees is what gets pinned
    git(registry, "push", "-q", "origin", "main")
    assert run_cli("register", f, "--push", cwd=registry).returncode == 0
    import hashlib

    pinned = git(remote, "show", "main:bundles/support-agent/1.0.0.yaml")
    assert hashlib.sha256(b"You are helpful, and brief.\n").hexdigest() in pinned


def test_a_committed_prompt_over_the_cap_is_refused(registry, tmp_path):
    big = registry / "prompts" / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(10 * 1024 * 1024 + 1)
    git(registry, "add", "prompts/big.txt")
    git(registry, "commit", "-q", "-m", "a huge prompt, by hand")
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(prompt="prompts/big.txt"))
    refused(registry, "register", f, fragment="prompts/big.txt is larger than 10 MiB")


def test_a_draft_at_its_own_final_path_gets_a_plain_message(registry):
    draft = registry / "bundles" / "support-agent" / "1.0.0.yaml"
    draft.parent.mkdir(parents=True)
    draft.write_text(bundle_text())
    refused(registry, "register", "bundles/support-agent/1.0.0.yaml",
            fragment="register reads your draft from anywhere; it writes bundles/NAME/VERSION.yaml itself: "
                     "move the draft elsewhere")


def test_a_draft_inside_the_registry_but_outside_bundles_registers(registry):
    # a draft kept in the registry but outside bundles/ is fine (and is not committed by register)
    draft = registry / "drafts" / "b.yaml"
    draft.parent.mkdir()
    draft.write_text(bundle_text())
    proc = run_cli("register", "drafts/b.yaml", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    assert "drafts/b.yaml" not in git(registry, "ls-files")
    assert subprocess.run(["git", "rev-parse", "support-agent@v1.0.0"], cwd=registry,
                          capture_output=True).returncode == 0


# -- sha256 repositories, doctor and a rewound remote ---------------------------------------------

def test_a_sha256_repository_is_refused_clearly_at_the_start(tmp_path):
    repo = tmp_path / "reg"
    git(tmp_path, "init", "-q", "--object-format=sha256", str(repo))
    proc = refused(repo, "init", str(repo), fragment="sha256 object names, which modelctl does not support")
    (repo / "modelctl.yaml").write_text("apiVersion: modelctl/v1\nkind: Registry\n")
    git(repo, "add", "modelctl.yaml")
    git(repo, "commit", "-q", "-m", "by hand")
    for command in (["status"], ["check"]):
        proc = refused(repo, *command, fragment="sha256 object names")
        assert "git init --object-format=sha1" in proc.stderr


def test_doctor_fix_never_pushes_back_commits_the_remote_dropped(registered, tmp_path):
    remote = tmp_path / "remote.git"
    bare_remote(registered, remote)
    (registered / "prompts" / "p3.txt").write_text("dropped later\n")
    git(registered, "add", "prompts/p3.txt")
    git(registered, "commit", "-q", "-m", "a commit an admin will remove")
    git(registered, "push", "-q", "origin", "main")
    # the admin rewinds the remote by one commit
    git(remote, "update-ref", "refs/heads/main", "main~1")
    remote_refs = git(remote, "for-each-ref")
    proc = run_cli("doctor", "--fix", "--push", "--json", cwd=registered)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    doc = json.loads(proc.stdout)
    kinds = [f["kind"] for f in doc["findings"]]
    assert "remote-dropped" in kinds and "unpushed-commits" not in kinds
    assert git(remote, "for-each-ref") == remote_refs


def test_doctor_still_publishes_commits_that_never_reached_the_remote(registered, tmp_path):
    remote = tmp_path / "remote.git"
    bare_remote(registered, remote)
    (registered / "prompts" / "p3.txt").write_text("new\n")
    git(registered, "add", "prompts/p3.txt")
    git(registered, "commit", "-q", "-m", "not pushed yet")
    proc = run_cli("doctor", "--fix", "--push", cwd=registered)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert git(remote, "rev-parse", "main") == git(registered, "rev-parse", "main")


# -- messages that point at the user's file and line --------------------------------------------

def test_a_tab_in_the_indentation_says_indent_with_spaces(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text().replace("  provider: openai", "\tprovider: openai"))
    refused(registry, "register", f, fragment=f"{f}:6: invalid YAML: a tab in the indentation; indent with spaces")


def test_prompt_and_eval_path_errors_carry_the_line(registry, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(prompt="prompts/missing.txt"))
    refused(registry, "register", f, fragment=f"{f}:9: prompt.template: prompts/missing.txt does not exist")
    f.write_text(bundle_text() + "eval:\n  report: evals/none.yaml\n")
    refused(registry, "register", f, fragment=f"{f}:19: eval.report: evals/none.yaml does not exist")


def test_bump_conflicts_do_not_suggest_bump(registered, tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(bundle_text(version="1.0.0", parent="1.0.0", model_id="gpt-4.1-mini-2025-05-01"))
    proc = refused(registered, "register", f, "--bump", "patch", fragment="needs a minor bump; use --bump minor")
    assert "use version" not in proc.stderr
    f.write_text(bundle_text(version="1.0.1", parent="1.0.0", temperature=0.9))
    assert run_cli("register", f, cwd=registered).returncode == 0
    f.write_text(bundle_text(version="1.0.0", parent="1.0.0", temperature=0.8))
    proc = refused(registered, "register", f, "--bump", "patch", fragment="(--bump patch from parent 1.0.0) exists")
    assert "use --bump" not in proc.stderr


# -- metrics: a gzip bomb in bounded memory, Prometheus partial responses ---------------------------

def test_gzip_bodies_are_inflated_in_bounded_steps():
    import gzip
    import tracemalloc

    from modelctl.metrics.base import _decoded

    bomb = gzip.compress(b"\0" * 50_000_000)
    raw = [bomb[i:i + 65536] for i in range(0, len(bomb), 65536)]
    tracemalloc.start()
    total = 0
    for chunk in _decoded(iter(raw), "gzip", "http://127.0.0.1/x"):
        assert len(chunk) <= 65536
        total += len(chunk)
        if total > 1_048_576:
            break  # where HttpSession stops with "more than max_bytes"
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total > 1_048_576 and peak < 4_000_000


def test_unknown_content_encodings_are_refused():
    from modelctl.errors import MetricsError
    from modelctl.metrics.base import _decoded

    with pytest.raises(MetricsError, match="content-encoding 'br'"):
        list(_decoded(iter([b"x"]), "br", "http://127.0.0.1/x"))


def test_a_prometheus_partial_response_is_a_poll_error_not_data():
    from test_metrics import CANARY, HEALTHY, MODEL, FakePrometheus, prom_provider, vector

    from modelctl.errors import MetricsError

    partial = vector("1200")
    partial["warnings"] = ["store 10.0.0.7:10901 unavailable: results may be incomplete"]
    with FakePrometheus({**HEALTHY, "llm_requests_total": partial}) as server:
        with pytest.raises(MetricsError, match=r"partial result.*10\.0\.0\.7"):
            prom_provider(server).read(MODEL, [CANARY], 60)
