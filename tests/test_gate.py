"""The eval gate: rules, significance, dataset pinning, and its Markdown/JUnit output."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from modelctl import gate, render
from modelctl.errors import UsageError, ValidationError

GATE = {
    "required": True,
    "alpha": 0.05,
    "metrics": {
        "accuracy": {"better": "higher", "max_drop": 0.01},
        "hallucination_rate": {"better": "lower", "max_rise": 0.005},
        "latency_p95_ms": {"better": "lower", "max_ratio": 1.2},
    },
}


def report(version="2.4.0", dataset=("golden-support", "3"), **metrics):
    return {
        "apiVersion": "modelctl/v1",
        "kind": "EvalReport",
        "name": "support-agent",
        "version": version,
        "dataset": {"name": dataset[0], "version": dataset[1]},
        "metrics": metrics,
        "created": "2026-04-20T10:00:00Z",
    }


BASE = report(
    "2.3.1",
    accuracy={"value": 0.942, "n": 1200},
    hallucination_rate={"value": 0.011, "n": 1200},
    latency_p95_ms={"value": 890},
)


def row(result, metric):
    return next(r for r in result.rows if r.metric == metric)


def test_candidate_as_good_as_baseline_passes_every_rule():
    cand = report(
        accuracy={"value": 0.945, "n": 1200},
        hallucination_rate={"value": 0.010, "n": 1200},
        latency_p95_ms={"value": 870},
    )
    result = gate.evaluate(cand, BASE, GATE)
    assert result.passed
    assert [r.verdict for r in result.rows] == ["pass", "pass", "pass"]
    assert [r.metric for r in result.rows] == ["accuracy", "hallucination_rate", "latency_p95_ms"]
    assert result.failures == []


def test_latency_ratio_is_a_point_rule_relative_to_the_baseline():
    ok = report(accuracy={"value": 0.942, "n": 1200}, hallucination_rate={"value": 0.011, "n": 1200},
                latency_p95_ms={"value": 1068})  # exactly 890 * 1.2
    bad = report(accuracy={"value": 0.942, "n": 1200}, hallucination_rate={"value": 0.011, "n": 1200},
                 latency_p95_ms={"value": 1069})
    r_ok = row(gate.evaluate(ok, BASE, GATE), "latency_p95_ms")
    r_bad = row(gate.evaluate(bad, BASE, GATE), "latency_p95_ms")
    assert r_ok.verdict == "pass" and r_ok.p_value is None and r_ok.test == "point"
    assert r_ok.limit == pytest.approx(1068)
    assert r_bad.verdict == "fail"
    assert "1069 > limit 1068" in r_bad.reason
    assert r_bad.change == pytest.approx(179)
    assert r_bad.change_relative == pytest.approx(179 / 890)


def test_absolute_rules_without_n_use_the_point_difference():
    cfg = {"metrics": {"score": {"better": "higher", "max_drop": 0.5}, "cost": {"better": "lower", "max_rise": 0.1}}}
    base = report("1.0.0", score=7.0, cost={"value": 1.0})
    assert gate.evaluate(report(score=6.5, cost={"value": 1.1}), base, cfg).passed
    result = gate.evaluate(report(score=6.4, cost={"value": 1.11}), base, cfg)
    assert not result.passed
    assert result.failures == ["score", "cost"]


def test_higher_is_better_ratio_allows_worse_by_that_factor():
    cfg = {"metrics": {"throughput": {"better": "higher", "max_ratio": 1.25}}}
    base = report("1.0.0", throughput=100.0)
    assert gate.evaluate(report(throughput=80.0), base, cfg).passed
    assert not gate.evaluate(report(throughput=79.0), base, cfg).passed


def test_higher_is_better_ratio_below_one_is_the_floor_ratio():
    cfg = {"metrics": {"throughput": {"better": "higher", "max_ratio": 0.8}}}
    base = report("1.0.0", throughput=100.0)
    result = gate.evaluate(report(throughput=80.0), base, cfg)
    assert result.passed and result.rows[0].rule == ">= 0.8x baseline"
    assert not gate.evaluate(report(throughput=79.0), base, cfg).passed


def test_optional_metric_missing_from_a_report_passes_with_a_reason():
    cfg = {"metrics": {"toxicity": {"better": "lower", "max_rise": 0.01, "required": False},
                       "accuracy": {"better": "higher", "max_drop": 0.01}}}
    result = gate.evaluate(report(accuracy={"value": 0.942, "n": 1200}), BASE, cfg)
    assert result.passed
    assert "optional" in row(result, "toxicity").reason
    # present in both: judged like any other metric
    base = report("2.3.1", toxicity=0.1, accuracy={"value": 0.942, "n": 1200})
    cand = report(toxicity=0.2, accuracy={"value": 0.942, "n": 1200})
    assert gate.evaluate(cand, base, cfg).failures == ["toxicity"]


def test_small_drop_with_small_sample_passes_because_it_is_not_significant():
    # 4 points down is beyond the 1-point margin, but 50 examples cannot tell it from noise
    base = report("2.3.1", accuracy={"value": 0.94, "n": 50})
    cand = report(accuracy={"value": 0.90, "n": 50})
    r = row(gate.evaluate(cand, base, {"metrics": {"accuracy": {"better": "higher", "max_drop": 0.01}}}), "accuracy")
    assert r.verdict == "pass"
    assert r.test == "farrington-manning"
    assert 0.05 < r.p_value < 0.5
    assert "not significantly" in r.reason


def test_large_drop_with_large_sample_fails():
    base = report("2.3.1", accuracy={"value": 0.942, "n": 1200})
    cand = report(accuracy={"value": 0.90, "n": 1200})
    result = gate.evaluate(cand, base, {"metrics": {"accuracy": {"better": "higher", "max_drop": 0.01}}})
    r = row(result, "accuracy")
    assert not result.passed
    assert r.verdict == "fail"
    assert r.p_value < 0.01
    assert "significantly" in r.reason and "not significantly" not in r.reason


def test_same_drop_fails_or_passes_depending_on_sample_size():
    cfg = {"metrics": {"accuracy": {"max_drop": 0.01}}}  # better inferred from max_drop
    verdicts = []
    for n in (100, 20000):
        base = report("2.3.1", accuracy={"value": 0.94, "n": n})
        verdicts.append(row(gate.evaluate(report(accuracy={"value": 0.92, "n": n}), base, cfg), "accuracy").verdict)
    assert verdicts == ["pass", "fail"]


def test_a_candidate_on_the_margin_is_never_significantly_worse():
    base = report("2.3.1", accuracy={"value": 0.942, "n": 100000})
    cand = report(accuracy={"value": 0.932, "n": 100000})
    r = row(gate.evaluate(cand, base, {"metrics": {"accuracy": {"max_drop": 0.01}}}), "accuracy")
    assert r.verdict == "pass"
    assert r.p_value == pytest.approx(0.5, abs=1e-6)


def test_rate_near_zero_is_tested_without_a_degenerate_variance():
    cfg = {"metrics": {"hallucination_rate": {"better": "lower", "max_rise": 0.005}}}
    base = report("2.3.1", hallucination_rate={"value": 0.0, "n": 2000})
    worse = report(hallucination_rate={"value": 0.03, "n": 2000})
    same = report(hallucination_rate={"value": 0.0, "n": 2000})
    r_worse = row(gate.evaluate(worse, base, cfg), "hallucination_rate")
    r_same = row(gate.evaluate(same, base, cfg), "hallucination_rate")
    assert r_worse.verdict == "fail" and r_worse.p_value < 1e-6
    assert r_same.verdict == "pass" and r_same.p_value > 0.5


def test_proportion_ratio_rule_is_tested_too():
    cfg = {"metrics": {"refusal_rate": {"better": "lower", "max_ratio": 1.5}}}
    base = report("2.3.1", refusal_rate={"value": 0.02, "n": 5000})
    assert not gate.evaluate(report(refusal_rate={"value": 0.05, "n": 5000}), base, cfg).passed
    small = row(gate.evaluate(report(refusal_rate={"value": 0.05, "n": 40}),
                              report("2.3.1", refusal_rate={"value": 0.02, "n": 40}), cfg), "refusal_rate")
    assert small.verdict == "pass" and small.test == "farrington-manning"


def test_alpha_is_split_over_the_tested_metrics():
    result = gate.evaluate(
        report(accuracy={"value": 0.942, "n": 1200}, hallucination_rate={"value": 0.011, "n": 1200},
               latency_p95_ms={"value": 890}),
        BASE, GATE,
    )
    assert row(result, "accuracy").alpha == pytest.approx(0.025)
    assert row(result, "hallucination_rate").alpha == pytest.approx(0.025)
    assert row(result, "latency_p95_ms").alpha is None


def test_p_value_between_split_and_whole_alpha_passes():
    # one-sided p of about 0.03: significant at 0.05 alone, not at 0.05 / 2
    cfg = {"alpha": 0.05, "metrics": {"a": {"max_drop": 0.0}, "b": {"max_drop": 0.0}}}
    base = report("2.3.1", a={"value": 0.90, "n": 2000}, b={"value": 0.9, "n": 2000})
    cand = report(a={"value": 0.8825, "n": 2000}, b={"value": 0.9, "n": 2000})
    r = row(gate.evaluate(cand, base, cfg), "a")
    assert 0.025 < r.p_value < 0.05
    assert r.verdict == "pass"
    alone = row(gate.evaluate(cand, base, {"alpha": 0.05, "metrics": {"a": {"max_drop": 0.0}}}), "a")
    assert alone.verdict == "fail"


def test_reports_on_different_dataset_versions_are_never_compared():
    cand = report(dataset=("golden-support", "4"), accuracy={"value": 0.99, "n": 10})
    with pytest.raises(UsageError) as err:
        gate.evaluate(cand, BASE, GATE)
    text = str(err.value)
    assert "golden-support version 4" in text and "golden-support version 3" in text
    assert err.value.exit_code == 2


def test_reports_on_different_dataset_names_are_never_compared():
    cand = report(dataset=("other-set", "3"), accuracy={"value": 0.99, "n": 10})
    with pytest.raises(UsageError, match="other-set"):
        gate.evaluate(cand, BASE, GATE)


def test_dataset_version_written_as_number_equals_the_same_string():
    cand = report(dataset=("golden-support", 3), accuracy={"value": 0.942, "n": 1200},
                  hallucination_rate={"value": 0.011, "n": 1200}, latency_p95_ms={"value": 890})
    assert gate.evaluate(cand, BASE, GATE).passed


def test_metric_missing_from_the_candidate_fails_with_reason():
    cand = report(accuracy={"value": 0.942, "n": 1200}, latency_p95_ms={"value": 890})
    result = gate.evaluate(cand, BASE, GATE)
    r = row(result, "hallucination_rate")
    assert not result.passed
    assert r.verdict == "fail" and "candidate report" in r.reason and "missing" in r.reason


def test_metric_missing_from_the_baseline_fails_with_reason():
    cfg = {"metrics": {"toxicity": {"better": "lower", "max_rise": 0.01}}}
    r = row(gate.evaluate(report(toxicity={"value": 0.0, "n": 100}), BASE, cfg), "toxicity")
    assert r.verdict == "fail"
    assert "baseline report" in r.reason and "--baseline" in r.reason


def test_non_finite_value_fails():
    cfg = {"metrics": {"accuracy": {"max_drop": 0.01}}}
    r = row(gate.evaluate(report(accuracy={"value": float("nan"), "n": 1200}), BASE, cfg), "accuracy")
    assert r.verdict == "fail" and "finite" in r.reason


def test_metrics_not_in_the_config_are_not_gated():
    cfg = {"metrics": {"latency_p95_ms": {"better": "lower", "max_ratio": 1.2}}}
    cand = report(accuracy={"value": 0.1, "n": 1200}, latency_p95_ms={"value": 890})
    result = gate.evaluate(cand, BASE, cfg)
    assert result.passed and [r.metric for r in result.rows] == ["latency_p95_ms"]


@pytest.mark.parametrize(
    "spec",
    [
        {"better": "lower", "max_drop": 0.01},
        {"better": "higher", "max_rise": 0.01},
        {"better": "sideways", "max_drop": 0.01},
        {"max_ratio": 1.2},
        {"better": "lower", "max_ratio": 0.8},
        {"better": "higher", "max_drop": -1},
        {"better": "higher", "max_drop": 0.01, "max_ratio": 1.1},
        {"better": "higher", "max_dorp": 0.01},
        {"better": "higher", "max_ratio": 0},
        {"better": "higher", "max_drop": 0.01, "required": "yes"},
    ],
)
def test_bad_rules_are_refused(spec):
    with pytest.raises(ValidationError, match="gate.metrics.m"):
        gate.evaluate(BASE, BASE, {"metrics": {"m": spec}})


@pytest.mark.parametrize("alpha", [0, 1, -0.1, "0.05", True])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValidationError, match="gate.alpha"):
        gate.parse_rules({"alpha": alpha, "metrics": {}})


def test_to_dict_is_versioned_json():
    result = gate.evaluate(report(accuracy={"value": 0.90, "n": 1200}, hallucination_rate={"value": 0.011, "n": 1200},
                                  latency_p95_ms={"value": 870}), BASE, GATE)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["schema"] == "modelctl/v1"
    assert doc["passed"] is False
    assert doc["failures"] == ["accuracy"]
    assert doc["dataset"] == {"name": "golden-support", "version": "3"}
    assert doc["candidate"] == {"name": "support-agent", "version": "2.4.0"}
    assert doc["baseline"] == {"name": "support-agent", "version": "2.3.1"}
    acc = doc["metrics"][0]
    assert acc["metric"] == "accuracy" and acc["verdict"] == "fail"
    assert acc["baseline"] == 0.942 and acc["candidate"] == 0.90
    assert acc["p_value"] < 0.01 and acc["rule"] == "drop <= 0.01"


def _markdown_table(text):
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in rows]


def test_markdown_comment_has_headline_and_a_row_per_metric():
    failing = report(accuracy={"value": 0.90, "n": 1200}, hallucination_rate={"value": 0.011, "n": 1200},
                     latency_p95_ms={"value": 870})
    text = render.gate_markdown(gate.evaluate(failing, BASE, GATE))
    assert text.splitlines()[0].startswith("### ") and "failed" in text.splitlines()[0]
    assert "support-agent 2.4.0" in text.splitlines()[0]
    table = _markdown_table(text)
    assert table[0] == ["Metric", "Baseline", "Candidate", "Change", "Rule", "p", "Verdict"]
    body = table[1:]
    assert [r[0] for r in body] == ["accuracy", "hallucination\\_rate", "latency\\_p95\\_ms"]
    assert body[0][1] == "0.942 (n=1200)" and body[0][2] == "0.9 (n=1200)"
    assert body[0][3] == "-0.042 (-4.46%)"
    assert body[0][-1] == "**fail**" and body[2][-1] == "pass"
    assert body[2][3] == "-20 (-2.25%)"
    assert "**Failed:**" in text

    passing = render.gate_markdown(gate.evaluate(BASE | {"version": "2.4.0"}, BASE, GATE))
    assert "passed" in passing.splitlines()[0] and "**Failed:**" not in passing


def test_markdown_escapes_table_breaking_text():
    cfg = {"metrics": {"a|b<script>": {"max_drop": 0.1}}}
    text = render.gate_markdown(gate.evaluate(report(**{"a|b<script>": 0.5}), report("1.0.0", **{"a|b<script>": 0.5}), cfg))
    table = _markdown_table(text)
    assert all(len(r) == 7 for r in table)
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_junit_parses_with_a_testcase_per_metric_and_failures():
    failing = report(accuracy={"value": 0.90, "n": 1200}, hallucination_rate={"value": 0.011, "n": 1200},
                     latency_p95_ms={"value": 2000})
    xml = render.gate_junit(gate.evaluate(failing, BASE, GATE))
    root = ET.fromstring(xml.encode())
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["accuracy", "hallucination_rate", "latency_p95_ms"]
    failed = {c.get("name"): c.find("failure") for c in cases}
    assert failed["hallucination_rate"] is None
    assert failed["accuracy"] is not None and "significantly" in failed["accuracy"].get("message")
    assert "2000 > limit 1068" in failed["latency_p95_ms"].get("message")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["dataset"] == "golden-support version 3"


def test_junit_escapes_markup_and_control_characters():
    name = 'x<&>"\x01'
    cfg = {"metrics": {name: {"max_drop": 0.1}}}
    xml = render.gate_junit(gate.evaluate(report(**{name: 0.1}), report("1.0.0", **{name: 0.5}), cfg))
    case = ET.fromstring(xml.encode()).find("testsuite/testcase")
    assert case.get("name") == 'x<&>"'
    assert case.find("failure") is not None
