"""status, show, diff, check: real output, JSON documents, and problems found by check."""
import json

from conftest import git, repo_state, run_cli


def test_status_plain_text_and_json(two_versions):
    proc = run_cli("status", cwd=two_versions)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "ACTIVE", "CANARY", "SHADOW", "LATEST", "VERSIONS"]
    assert lines[1].split() == ["support-agent", "-", "-", "-", "1.0.1", "2"]
    assert "\x1b[" not in proc.stdout  # not a terminal: no colour codes
    doc = json.loads(run_cli("status", "--json", cwd=two_versions).stdout)
    assert doc["schema"] == "modelctl/v1"
    assert doc["models"] == [{"name": "support-agent", "active": None, "previous": None, "canary": None,
                              "shadow": None, "hold": None, "latest": "1.0.1", "versions": 2}]


def test_status_unknown_model_is_exit_2(two_versions):
    proc = run_cli("status", "nope", cwd=two_versions)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no model named 'nope'")


def test_show_lists_versions_with_who_and_when(two_versions):
    doc = json.loads(run_cli("show", "support-agent", "--json", cwd=two_versions).stdout)
    assert [v["version"] for v in doc["versions"]] == ["1.0.0", "1.0.1"]
    v = doc["versions"][1]
    assert v["status"] == "registered" and v["model"] == "gpt-4.1-mini-2025-04-14"
    assert v["registered_by"] == "Ada Tester <ada@example.com>" and v["registered_at"].endswith("Z")
    assert len(v["prompt_sha256"]) == 64
    text = run_cli("show", "support-agent", cwd=two_versions).stdout
    assert "1.0.1" in text and "openai/gpt-4.1-mini-2025-04-14" in text


def test_show_one_bundle(two_versions):
    proc = run_cli("show", "support-agent@1.0.1", cwd=two_versions)
    assert proc.returncode == 0
    assert 'version: "1.0.1"' in proc.stdout and "prompts/p2.txt" in proc.stdout
    doc = json.loads(run_cli("show", "support-agent@v1.0.1", "--json", cwd=two_versions).stdout)
    assert doc["bundle"]["parent"] == "1.0.0"
    missing = run_cli("show", "support-agent@3.0.0", cwd=two_versions)
    assert missing.returncode == 2 and "known versions: 1.0.0, 1.0.1" in missing.stderr


def test_diff_field_by_field(two_versions):
    doc = json.loads(run_cli("diff", "support-agent", "1.0.0", "1.0.1", "--json", cwd=two_versions).stdout)
    assert doc["changed"] == ["prompt", "baseline"]
    assert {"field": "baseline.error_rate", "from": 0.01, "to": 0.012} in doc["fields"]["baseline"]
    assert doc["semver"] == "patch"
    text = run_cli("diff", "support-agent", "1.0.0", "1.0.1", cwd=two_versions).stdout
    assert "prompt.template" in text and "prompts/p2.txt" in text


def test_check_clean_registry(two_versions):
    proc = run_cli("check", cwd=two_versions)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("ok:")


def _commit_all(repo, msg="hand edit"):
    git(repo, "commit", "-q", "-am", msg)


def test_check_finds_an_edited_bundle(two_versions):
    path = two_versions / "bundles/support-agent/1.0.0.yaml"
    path.write_text(path.read_text().replace("temperature: 0.3", "temperature: 0.9"))
    _commit_all(two_versions)
    proc = run_cli("check", cwd=two_versions)
    assert proc.returncode == 1
    assert "bundles/support-agent/1.0.0.yaml" in proc.stdout and "immutable" in proc.stdout


def test_check_finds_a_changed_prompt_and_bad_deployment(two_versions):
    (two_versions / "prompts/p2.txt").write_text("changed under the bundle\n")
    dep = two_versions / "deployments/support-agent.yaml"
    dep.write_text(dep.read_text().replace("active: null", 'active: "1.0.0"'))
    _commit_all(two_versions)
    doc = json.loads(run_cli("check", "--json", cwd=two_versions).stdout)
    assert doc["ok"] is False
    messages = [(f["path"], f["message"]) for f in doc["findings"]]
    assert any(p == "bundles/support-agent/1.0.1.yaml" and "sha256 mismatch" in m for p, m in messages)
    assert any(p == "deployments/support-agent.yaml" and "active is 1.0.0 but its status is registered" in m
               for p, m in messages)
    assert all(f["line"] for f in doc["findings"] if f["path"].startswith("deployments/"))


def test_check_lists_every_bundle_problem_and_doctor_refuses_on_the_first(two_versions):
    # one rule list (bundle.stored_problems): check reports all of them, doctor --fix names the first
    (two_versions / "prompts/p2.txt").unlink()
    path = two_versions / "bundles/support-agent/1.0.1.yaml"
    path.write_text(path.read_text() + "eval:\n  report: evals/none.yaml\n")
    _commit_all(two_versions)
    doc = json.loads(run_cli("check", "--json", cwd=two_versions).stdout)
    mine = [f for f in doc["findings"] if f["path"] == "bundles/support-agent/1.0.1.yaml"]
    said = [f["message"] for f in mine]
    assert any("prompt.template: prompts/p2.txt does not exist in the registry" in m for m in said), said
    assert any("eval.report: evals/none.yaml does not exist in the registry" in m for m in said), said
    assert all(f["line"] for f in mine if "does not exist" in f["message"])


def test_check_reports_schema_errors_with_line(two_versions):
    (two_versions / "evals/support-agent").mkdir(parents=True)
    (two_versions / "evals/support-agent/1.0.0.yaml").write_text(
        "apiVersion: modelctl/v1\nkind: EvalReport\nname: support-agent\nversion: \"1.0.0\"\n"
        "dataset: {name: golden, version: \"3\"}\nmetrics:\n  accuracy: {value: high}\n")
    git(two_versions, "add", "evals")
    _commit_all(two_versions)
    proc = run_cli("check", cwd=two_versions)
    assert proc.returncode == 1
    assert "error: evals/support-agent/1.0.0.yaml:7: metrics.accuracy.value" in proc.stdout


def test_reads_do_not_write(two_versions):
    before = repo_state(two_versions)
    for args in (["status"], ["show", "support-agent"], ["diff", "support-agent", "1.0.0", "1.0.1"], ["check"]):
        assert run_cli(*args, cwd=two_versions).returncode == 0
    assert repo_state(two_versions) == before


def test_not_a_registry(tmp_path):
    proc = run_cli("status", cwd=tmp_path)
    assert proc.returncode == 2 and "not inside a git repository" in proc.stderr
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "x")
    proc = run_cli("status", cwd=tmp_path)
    assert proc.returncode == 2 and "not a modelctl registry" in proc.stderr


def test_rich_table_on_a_terminal_and_no_colour_codes_with_no_color(two_versions):
    forced = run_cli("status", cwd=two_versions, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert forced.returncode == 0
    assert "┃" in forced.stdout or "│" in forced.stdout  # a rich table, as on a terminal
    plain = run_cli("status", cwd=two_versions)  # piped, NO_COLOR=1 from the fixture
    assert "│" not in plain.stdout and "\x1b[" not in plain.stdout
