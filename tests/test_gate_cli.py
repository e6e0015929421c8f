"""`modelctl gate` and promotions that obey it: exit codes, output formats, trailers, nothing written on refusal."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import repo_state, run_cli
from evalkit import NAME, configure, promote, register, trailers

WORSE = {"accuracy": (0.90, 1200), "hallucination_rate": (0.011, 1200), "latency_p95_ms": (870, None)}
BETTER = {"accuracy": (0.95, 1200), "hallucination_rate": (0.010, 1200), "latency_p95_ms": (860, None)}


@pytest.fixture
def served(registry, tmp_path):
    """1.0.0 active with a report; no pipeline stages required."""
    configure(registry, pipeline=[])
    register(registry, tmp_path, "1.0.0")
    promote(registry, "1.0.0")
    return registry


def gate_json(registry, *args):
    proc = run_cli("gate", NAME, *args, "--json", cwd=registry)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def test_gate_passes_against_the_serving_version(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", metrics=BETTER)
    proc = run_cli("gate", NAME, "1.1.0", cwd=served)
    assert proc.returncode == 0, proc.stderr
    assert "vs 1.0.0" in proc.stdout
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert lines["accuracy"][-1] == "pass" and lines["latency_p95_ms"][-1] == "pass"
    assert "gate passed: support-agent 1.1.0" in proc.stderr
    proc, doc = gate_json(served, "1.1.0")
    assert doc["schema"] == "modelctl/v1" and doc["passed"] is True
    assert doc["baseline"] == {"name": NAME, "version": "1.0.0"}
    assert doc["dataset"] == {"name": "golden-support", "version": "3"}
    assert [m["metric"] for m in doc["metrics"]] == ["accuracy", "hallucination_rate", "latency_p95_ms"]


def test_gate_fails_with_exit_1_and_names_the_metric(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", metrics=WORSE)
    proc = run_cli("gate", NAME, "1.1.0", cwd=served)
    assert proc.returncode == 1
    assert "gate failed: support-agent 1.1.0: accuracy" in proc.stderr
    assert "accuracy: 0.9 < limit 0.932" in proc.stdout
    proc, doc = gate_json(served, "1.1.0")
    assert proc.returncode == 1 and doc["passed"] is False and doc["failures"] == ["accuracy"]


def test_reports_on_different_dataset_versions_are_never_compared(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", metrics=BETTER, dataset="4")
    proc = run_cli("gate", NAME, "1.1.0", cwd=served)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: eval reports on different datasets cannot be compared")
    assert "golden-support version 4" in err and "golden-support version 3" in err
    assert len(err.splitlines()) == 1 and proc.stdout == ""


def test_baseline_option_and_report_file(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", metrics=BETTER)
    register(served, tmp_path, "1.2.0", "1.1.0", metrics={**BETTER, "accuracy": (0.942, 1200)})
    # against the serving 1.0.0 it passes; against 1.1.0 (0.95) a drop to 0.942 is within 0.01
    _, doc = gate_json(served, "1.2.0", "--baseline", "1.1.0")
    assert doc["baseline"]["version"] == "1.1.0" and doc["passed"]
    # --report replaces the bundle's report: a worse local file fails
    other = tmp_path / "local-report.json"
    other.write_text(json.dumps({"apiVersion": "modelctl/v1", "kind": "EvalReport", "name": NAME, "version": "1.2.0",
                                 "dataset": {"name": "golden-support", "version": "3"},
                                 "metrics": {"accuracy": {"value": 0.80, "n": 1200},
                                             "hallucination_rate": {"value": 0.011, "n": 1200},
                                             "latency_p95_ms": {"value": 870}}}))
    proc, doc = gate_json(served, "1.2.0", "--report", other)
    assert proc.returncode == 1 and doc["failures"] == ["accuracy"] and doc["baseline"]["version"] == "1.0.0"
    # a report for another version is refused, not silently compared
    proc = run_cli("gate", NAME, "1.1.0", "--report", other, cwd=served)
    assert proc.returncode == 2 and "is for support-agent 1.2.0, not support-agent 1.1.0" in proc.stderr
    proc = run_cli("gate", NAME, "1.1.0", "--baseline", "1.1.0", cwd=served)
    assert proc.returncode == 2 and "the candidate itself" in proc.stderr


def test_first_version_passes_with_a_note_but_needs_every_metric(registry, tmp_path):
    register(registry, tmp_path, "1.0.0")
    proc, doc = gate_json(registry, "1.0.0")
    assert proc.returncode == 0
    assert doc["passed"] and doc["baseline"] == {"name": None, "version": None}
    assert "first version" in doc["note"]
    assert "no baseline" in proc.stderr or "first version" in proc.stderr
    # its report becomes the next version's baseline: a configured metric missing from it fails now
    register(registry, tmp_path, "1.1.0", "1.0.0", metrics={"accuracy": (0.94, 1200), "latency_p95_ms": (870, None)})
    proc, doc = gate_json(registry, "1.1.0")
    assert proc.returncode == 1 and doc["failures"] == ["hallucination_rate"]


def test_missing_reports_exit_2_with_what_to_do(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", report=False)
    proc = run_cli("gate", NAME, "1.1.0", cwd=served)
    assert proc.returncode == 2
    assert "support-agent 1.1.0 has no eval report" in proc.stderr and "--report FILE" in proc.stderr
    proc = run_cli("gate", NAME, "1.2.0", cwd=served)
    assert proc.returncode == 2 and "has no version 1.2.0" in proc.stderr
    # a baseline without a report: nothing to compare with
    register(served, tmp_path, "1.2.0", "1.1.0", metrics=BETTER)
    proc = run_cli("gate", NAME, "1.2.0", "--baseline", "1.1.0", cwd=served)
    assert proc.returncode == 2 and "the baseline support-agent 1.1.0 has no eval report" in proc.stderr
    assert "--baseline VERSION" in proc.stderr


def test_markdown_and_junit_outputs_to_a_file(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", metrics=WORSE)
    out = tmp_path / "gate.md"
    proc = run_cli("gate", NAME, "1.1.0", "--format", "markdown", "--output", out, cwd=served)
    assert proc.returncode == 1 and proc.stdout == ""
    md = out.read_text()
    assert md.startswith("### ❌ Eval gate failed: support-agent 1.1.0")
    assert "| Metric | Baseline | Candidate | Change | Rule | p | Verdict |" in md
    assert "| accuracy | 0.942 (n=1200) | 0.9 (n=1200) | -0.042 (-4.46%) |" in md
    xml_path = tmp_path / "gate.xml"
    proc = run_cli("gate", NAME, "1.1.0", "--format", "junit", "-o", xml_path, cwd=served)
    assert proc.returncode == 1
    suite = ET.parse(xml_path).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert sorted(cases) == ["accuracy", "hallucination_rate", "latency_p95_ms"]
    assert cases["accuracy"].find("failure") is not None and cases["latency_p95_ms"].find("failure") is None
    assert suite.get("failures") == "1"


def test_bad_format_or_output_is_usage(served):
    assert run_cli("gate", NAME, "1.0.0", "--format", "yaml", cwd=served).returncode == 2
    proc = run_cli("gate", NAME, "1.0.0", "--output", served / "nope" / "x.md", cwd=served)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert run_cli("gate", NAME, "v1.0.0", cwd=served).returncode == 2


# -- promotions obey the gate ------------------------------------------------------------------

@pytest.fixture
def gated(served):
    configure(served, gate_required=True)
    return served


def test_failing_gate_refuses_canary_and_active_and_writes_nothing(gated, tmp_path):
    register(gated, tmp_path, "1.1.0", "1.0.0", metrics=WORSE)
    before = repo_state(gated)
    for args in (("canary", NAME, "1.1.0", "--pct", "5"), ("promote", NAME, "1.1.0", "--to", "active"),
                 ("promote", NAME, "1.1.0", "--to", "canary")):
        proc = run_cli(*args, cwd=gated)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "gate failed" in proc.stderr and "accuracy" in proc.stderr, proc.stderr
        assert repo_state(gated) == before
    # stages outside canary/active do not need the gate
    proc = run_cli("promote", NAME, "1.1.0", "--to", "staging", cwd=gated)
    assert proc.returncode == 0, proc.stderr


def test_missing_report_refuses_with_exit_2(gated, tmp_path):
    register(gated, tmp_path, "1.1.0", "1.0.0", report=False)
    before = repo_state(gated)
    proc = run_cli("canary", NAME, "1.1.0", "--pct", "5", cwd=gated)
    assert proc.returncode == 2 and "has no eval report" in proc.stderr
    assert repo_state(gated) == before


def test_passing_gate_is_recorded_in_the_trailers(gated, tmp_path):
    register(gated, tmp_path, "1.1.0", "1.0.0", metrics=BETTER)
    proc = run_cli("canary", NAME, "1.1.0", "--pct", "5", cwd=gated)
    assert proc.returncode == 0, proc.stderr
    t = trailers(gated)
    assert t["Modelctl-Gate"].startswith("pass vs 1.0.0 on golden-support 3 (accuracy 0.95 vs 0.942")
    assert "Modelctl-Gate-Override" not in t


def test_force_with_reason_overrides_on_record(gated, tmp_path):
    register(gated, tmp_path, "1.1.0", "1.0.0", metrics=WORSE)
    proc = run_cli("promote", NAME, "1.1.0", "--to", "active", "--force", cwd=gated)
    assert proc.returncode == 2 and "--reason" in proc.stderr
    proc = run_cli("promote", NAME, "1.1.0", "--to", "active", "--force", "--reason", "accuracy set re-labelled",
                   cwd=gated)
    assert proc.returncode == 0, proc.stderr
    t = trailers(gated)
    assert t["Modelctl-Gate"].startswith("fail vs 1.0.0")
    assert t["Modelctl-Gate-Override"] == "accuracy set re-labelled"


def test_first_version_promotion_records_the_waiver(registry, tmp_path):
    configure(registry, pipeline=[], gate_required=True)
    register(registry, tmp_path, "1.0.0")
    promote(registry, "1.0.0")
    assert trailers(registry)["Modelctl-Gate"].startswith("pass (no baseline: nothing serves support-agent yet")


def test_report_at_the_layout_path_is_found_without_eval_report_in_the_bundle(served, tmp_path):
    from conftest import git
    from evalkit import report_text

    register(served, tmp_path, "1.1.0", "1.0.0", report=False)
    (served / "evals" / NAME / "1.1.0.yaml").write_text(report_text("1.1.0", **BETTER))
    git(served, "add", "evals")
    git(served, "commit", "-q", "-m", "eval report for 1.1.0")
    proc, doc = gate_json(served, "1.1.0")
    assert proc.returncode == 0, proc.stderr
    assert doc["passed"] is True and doc["candidate"]["version"] == "1.1.0"


def test_uncommitted_eval_report_says_the_committed_one_is_used(served, tmp_path):
    register(served, tmp_path, "1.1.0", "1.0.0", metrics=BETTER)
    report = served / "evals" / NAME / "1.1.0.yaml"
    report.write_text(report.read_text().replace("0.95", "0.96"))
    proc = run_cli("gate", NAME, "1.1.0", cwd=served)
    assert proc.returncode == 0, proc.stderr
    assert (f"note: evals/{NAME}/1.1.0.yaml has uncommitted changes; using the committed version (commit it first)"
            in proc.stderr.splitlines())
