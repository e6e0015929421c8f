"""`check` for CI: secrets (redacted), retired models, missing fallbacks, --changed-since, output formats;
and secrets never become git objects on any write."""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import git, repo_state, run_cli
from evalkit import NAME, bundle_file, configure, promote, register

KEY = "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789abcd"
GH_TOKEN = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5"


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@pytest.fixture
def served(registry, tmp_path):
    """1.0.0 active (no fallbacks), 1.1.0 registered with fallbacks; no stages required."""
    configure(registry, pipeline=[])
    register(registry, tmp_path, "1.0.0")
    promote(registry, "1.0.0")
    register(registry, tmp_path, "1.1.0", "1.0.0", fallbacks=True)
    return registry


def commit_file(repo, rel, text, message="hand edit"):
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(repo, "add", rel)
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def check(repo, *args):
    return run_cli("check", *args, cwd=repo)


def findings(repo, *args):
    proc = check(repo, "--format", "json", *args)
    return proc, json.loads(proc.stdout)["findings"]


def test_a_clean_registry_passes_with_a_fallback_warning_for_the_active_bundle(served):
    proc, found = findings(served)
    assert proc.returncode == 0, proc.stdout
    assert [(f["path"], f["level"]) for f in found] == [("bundles/support-agent/1.0.0.yaml", "warning")]
    assert "serves traffic (active) with no fallbacks" in found[0]["message"]
    assert found[0]["line"] == 6  # the model block
    # 1.1.0 has fallbacks but serves nothing: no warning either way
    promote(served, "1.1.0")
    assert findings(served)[1] == []


def test_secrets_anywhere_are_errors_with_the_value_redacted(served):
    commit_file(served, "providers/openai.yaml",
                "provider: openai\nauth:\n  secretRef: openai-key\n  fallback: ${OPENAI_API_KEY}\n"
                f"  api_key: {KEY}\n")
    commit_file(served, "notes.md", f"ci token {GH_TOKEN}\n")
    proc, found = findings(served)
    assert proc.returncode == 1
    errors = [f for f in found if f["level"] == "error"]
    assert [(f["path"], f["line"]) for f in errors] == [("notes.md", 1), ("providers/openai.yaml", 5)]
    assert "OpenAI API key sk-p…(48 chars)" in errors[1]["message"]
    assert "GitHub token" in errors[0]["message"]
    text = check(served).stdout
    assert "error: providers/openai.yaml:5: OpenAI API key sk-p…(48 chars)" in text
    for out in (text, proc.stdout, check(served, "--format", "github").stdout, check(served, "--format", "junit").stdout):
        assert KEY not in out and KEY[8:20] not in out and GH_TOKEN[6:] not in out


def deprecations(repo, entries: dict, warn_days: int | None = None):
    lines = ["apiVersion: modelctl/v1", "kind: Deprecations", "models:"]
    lines += [f'  {k}: "{v}"' for k, v in entries.items()]
    commit_file(repo, "deprecations.yaml", "\n".join(lines) + "\n", "deprecations")
    if warn_days is not None:
        text = (repo / "modelctl.yaml").read_text().replace("warn_days: 90", f"warn_days: {warn_days}")
        commit_file(repo, "modelctl.yaml", text, "warn days")


def test_retired_models_on_a_route_are_errors_and_soon_retiring_ones_warnings(served):
    pinned = "openai/gpt-4.1-mini-2025-04-14"
    deprecations(served, {pinned: today() - dt.timedelta(days=3)})
    proc, found = findings(served)
    assert proc.returncode == 1
    retired = [f for f in found if "retired" in f["message"]]
    # only the active 1.0.0: the registered 1.1.0 is not on a route, and bundles are immutable
    assert [(f["path"], f["line"], f["level"]) for f in retired] == [("bundles/support-agent/1.0.0.yaml", 7, "error")]
    assert "support-agent 1.0.0 (active): model.id: openai/gpt-4.1-mini-2025-04-14 was retired on" in \
        retired[0]["message"] and "(3 days ago)" in retired[0]["message"]
    # within warn_days: a warning, and check still passes
    deprecations(served, {pinned: today() + dt.timedelta(days=10)})
    proc, found = findings(served)
    assert proc.returncode == 0
    assert any(f["level"] == "warning" and "retires on" in f["message"] and "(in 10 days)" in f["message"]
               for f in found)
    deprecations(served, {pinned: today() + dt.timedelta(days=10)}, warn_days=5)
    assert not any("retires" in f["message"] for f in findings(served)[1])


def test_fallback_pins_are_checked_too_and_a_bad_table_is_an_error(served):
    deprecations(served, {"anthropic/claude-sonnet-4-5-20250929": today()})
    promote(served, "1.1.0")
    proc, found = findings(served)
    assert proc.returncode == 1
    [f] = [f for f in found if f["level"] == "error"]
    assert f["path"] == "bundles/support-agent/1.1.0.yaml" and "fallbacks[0].id" in f["message"]
    assert "(today)" in f["message"]
    commit_file(served, "deprecations.yaml", "models:\n  openai/x: someday\n")
    proc, found = findings(served)
    assert proc.returncode == 1
    assert [f["path"] for f in found if f["level"] == "error"] == ["deprecations.yaml"]


def test_changed_since_checks_only_what_the_branch_touched(served, tmp_path):
    deprecations(served, {"openai/gpt-4.1-mini-2025-04-14": today() - dt.timedelta(days=1)})
    commit_file(served, "providers/openai.yaml", f"api_key: {KEY}\n")  # already on main
    assert check(served).returncode == 1
    git(served, "checkout", "-q", "-b", "feature")
    register(served, tmp_path, "1.2.0", "1.1.0", fallbacks=True, temperature=0.31, model_id="gpt-4.1-mini-2025-06-01")
    proc, found = findings(served, "--changed-since", "main")
    assert proc.returncode == 0, found
    assert found == []  # main's secret and the retired active pin are not this branch's doing
    doc = json.loads(check(served, "--json", "--changed-since", "main").stdout)
    # bundle and eval report: a registration leaves the deployment file as it was (registered is implicit)
    assert doc["checked"] == 2 and doc["changed_since"] == "main"
    # a bundle the branch adds is judged even though it serves nothing yet
    register(served, tmp_path, "1.3.0", "1.2.0", fallbacks=True, temperature=0.31, model_id="gpt-4.1-mini-2025-04-14")
    proc, found = findings(served, "--changed-since", "main")
    assert proc.returncode == 1
    assert [(f["path"], f["level"]) for f in found] == [("bundles/support-agent/1.3.0.yaml", "error")]
    assert "support-agent 1.3.0 (registered): model.id" in found[0]["message"]
    # moving a version onto a route in the branch puts it in scope; what served before stays out
    proc = run_cli("canary", NAME, "1.1.0", "--pct", "5", cwd=served)
    assert proc.returncode == 0, proc.stderr
    proc, found = findings(served, "--changed-since", "main")
    assert sorted((f["path"], f["level"]) for f in found) == [
        ("bundles/support-agent/1.1.0.yaml", "error"), ("bundles/support-agent/1.3.0.yaml", "error")]
    assert "support-agent 1.1.0 (canary): model.id" in found[0]["message"] + found[1]["message"]


def test_changed_since_refuses_option_like_and_unknown_refs(served):
    before = repo_state(served)
    for ref, message in (("--output=/tmp/x", "invalid --changed-since"), ("-p", "invalid --changed-since"),
                         ("no-such-branch", "does not name a commit"), ("main bad", "invalid --changed-since")):
        proc = check(served, f"--changed-since={ref}")
        assert proc.returncode == 2, (ref, proc.stderr)
        assert message in proc.stderr and proc.stderr.startswith("error: ")
    assert repo_state(served) == before


def test_github_annotations_and_their_escaping(served):
    commit_file(served, "odd/a,b:c.yaml", f"key: {KEY}\n")
    proc = check(served, "--format", "github")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "::error file=odd/a%2Cb%3Ac.yaml,line=1,title=modelctl check::OpenAI API key sk-p…(48 chars): " in \
        next(line for line in lines if line.startswith("::error"))
    assert any(line.startswith("::warning file=bundles/support-agent/1.0.0.yaml,line=6,title=modelctl check::")
               for line in lines)
    assert lines[-1] == "modelctl check: 1 error(s), 1 warning(s) in 6 files"

    from modelctl.render import github_escape_data, github_escape_property

    assert github_escape_data("50% of\r\ntraffic") == "50%25 of%0D%0Atraffic"
    assert github_escape_property("a,b:c%\n") == "a%2Cb%3Ac%25%0A"


def test_junit_and_json_alias(served):
    commit_file(served, "providers/openai.yaml", f"api_key: {KEY}\n")
    proc = check(served, "--format", "junit")
    assert proc.returncode == 1
    suite = ET.fromstring(proc.stdout).find("testsuite")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"providers/openai.yaml", "bundles/support-agent/1.0.0.yaml"}
    assert cases["providers/openai.yaml"].find("failure") is not None
    assert cases["bundles/support-agent/1.0.0.yaml"].find("failure") is None  # a warning only
    assert suite.get("failures") == "1" and suite.get("tests") == "2"
    a, b = check(served, "--json"), check(served, "--format", "json")
    assert a.returncode == b.returncode == 1 and json.loads(a.stdout) == json.loads(b.stdout)
    assert check(served, "--json", "--format", "junit").returncode == 2
    assert check(served, "--format", "sarif").returncode == 2


def objects(repo) -> str:
    """Every object in the repository, contents included (loose and packed)."""
    return subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo, capture_output=True,
                          check=True).stdout.decode("utf-8", "replace")


def test_secrets_never_become_git_objects(served, tmp_path):
    before = repo_state(served)
    # in a bundle field, in a new prompt file, in the register message, in a lifecycle reason
    leaky = bundle_file(tmp_path, "1.2.0", "1.1.0", temperature=0.5, report=False)
    leaky.write_text(leaky.read_text().replace("max_tokens: 1024", f"max_tokens: 1024\n  api_key: {KEY}"))
    (served / "prompts" / "p9.txt").write_text(f"Use {KEY} to call the API.\n")
    prompt_leak = bundle_file(tmp_path, "1.3.0", "1.1.0", report=False, temperature=0.31)
    prompt_leak.write_text(prompt_leak.read_text().replace("prompts/p1.txt", "prompts/p9.txt"))
    attempts = [
        (("register", leaky), "api_key"),
        (("register", prompt_leak), "prompts/p9.txt:1"),
        (("register", bundle_file(tmp_path, "1.4.0", "1.1.0", report=False, temperature=0.6), "-m",
          f"rotated {KEY}"), "the commit message"),
        (("promote", NAME, "1.1.0", "--to", "staging", "--reason", f"see {GH_TOKEN}"), "the commit message"),
    ]
    for args, where in attempts:
        proc = run_cli(*args, cwd=served)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "looks like a secret" in proc.stderr and "refusing to commit it" in proc.stderr
        assert KEY not in proc.stderr + proc.stdout and GH_TOKEN not in proc.stderr + proc.stdout
        if where == "api_key":  # the user's own file and line, not the path register would write
            line = next(i for i, row in enumerate(leaky.read_text().splitlines(), 1) if KEY in row)
            assert f"error: {leaky}:{line}: looks like a secret" in proc.stderr
    state = repo_state(served)
    assert state["refs"] == before["refs"] and state["head"] == before["head"]
    everything = objects(served)
    assert KEY not in everything and GH_TOKEN not in everything


def test_changed_since_holds_promotions_made_by_hand_to_the_gate(served, tmp_path):
    worse = {"accuracy": (0.90, 1200), "hallucination_rate": (0.011, 1200), "latency_p95_ms": (870, None)}
    register(served, tmp_path, "1.2.0", "1.1.0", metrics=worse, fallbacks=True)
    configure(served, gate_required=True)
    git(served, "checkout", "-q", "-b", "forced")
    proc = run_cli("canary", NAME, "1.2.0", "--pct", "5", "--force", "--reason", "try it on 5%", cwd=served)
    assert proc.returncode == 0, proc.stderr
    proc, found = findings(served, "--changed-since", "main")
    assert proc.returncode == 0
    assert [(f["path"], f["level"]) for f in found] == [("deployments/support-agent.yaml", "warning")]
    assert found[0]["message"].startswith("lifecycle rule 'gate' overridden (try it on 5%): support-agent 1.2.0 "
                                          "moves to canary but gate.required is set and the eval gate fails")
    # the same change made by hand (no override on record) is an error
    git(served, "commit", "-q", "--amend", "-m", "move 1.2.0 to canary")
    proc, found = findings(served, "--changed-since", "main")
    assert proc.returncode == 1
    [f] = found
    assert f["path"] == "deployments/support-agent.yaml" and f["level"] == "error"
    assert f["line"] == int(next(i for i, line in enumerate(
        (served / "deployments/support-agent.yaml").read_text().splitlines(), 1) if line.strip().startswith('"1.2.0"')))
    assert f["message"].startswith("lifecycle rule 'gate': support-agent 1.2.0 moves to canary but gate.required is "
                                   "set and the eval gate fails: accuracy")
    assert "'move 1.2.0 to canary'" in f["message"] and "Modelctl-Gate-Override" in f["message"]
    # a version that passes needs nothing
    git(served, "checkout", "-q", "main")
    git(served, "checkout", "-q", "-b", "good")
    assert run_cli("canary", NAME, "1.1.0", "--pct", "5", cwd=served).returncode == 0
    proc, found = findings(served, "--changed-since", "main")
    assert proc.returncode == 0 and found == []


def test_a_change_that_moves_the_metrics_url_is_a_warning_for_the_reviewer(served):
    base = git(served, "rev-parse", "HEAD").strip()
    text = (served / "modelctl.yaml").read_text()
    moved = re.sub(r"(?m)^  url: .*$", "  url: https://metrics.example.org/{model}", text, count=1)
    assert moved != text
    commit_file(served, "modelctl.yaml", moved, "point watch elsewhere")
    proc, found = findings(served, "--changed-since", base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warned = [f for f in found if f["path"] == "modelctl.yaml"]
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    assert "metrics.example.org" in warned[0]["message"] and "make sure that host is yours" in warned[0]["message"]
    # the same file without a change under review: no warning
    assert [f for f in findings(served)[1] if f["path"] == "modelctl.yaml"] == []
