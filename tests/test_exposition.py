"""The controller's /metrics and /healthz: the text format read back by prometheus_client's own
parser, over a real HTTP server on 127.0.0.1; health on an injected clock."""
from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelctl.exposition import Health, Metrics, Server, families, parse_port


def controller_metrics() -> Metrics:
    return families(Metrics(), [
        ("modelctl_watch_canary_percent", "The canary's share of traffic.", "gauge"),
        ("modelctl_watch_statistic", "The sequential statistic per metric.", "gauge"),
        ("modelctl_watch_decisions_total", "Decisions made, by kind.", "counter"),
    ])


def parsed(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_the_text_format_reads_back_with_prometheus_clients_parser():
    m = controller_metrics()
    m.set("modelctl_watch_canary_percent", 5, model="support-agent")
    m.set("modelctl_watch_statistic", 61.9, model='we"ird\\name\n', metric="error_rate")
    m.inc("modelctl_watch_decisions_total", model="support-agent", kind="rollback")
    m.inc("modelctl_watch_decisions_total", model="support-agent", kind="rollback")
    m.set("modelctl_watch_statistic", float("nan"), model="x", metric="latency")
    got = parsed(m.text())
    assert got["modelctl_watch_canary_percent"] == {(("model", "support-agent"),): 5.0}
    assert got["modelctl_watch_statistic"][(("metric", "error_rate"), ("model", 'we"ird\\name\n'))] == 61.9
    assert got["modelctl_watch_decisions_total"] == {(("kind", "rollback"), ("model", "support-agent")): 2.0}
    assert "# TYPE modelctl_watch_decisions_total counter" in m.text()


def test_a_model_no_longer_watched_leaves_the_gauges():
    m = controller_metrics()
    m.set("modelctl_watch_canary_percent", 5, model="a")
    m.set("modelctl_watch_canary_percent", 10, model="b")
    m.remove("modelctl_watch_canary_percent", model="a")
    assert m.value("modelctl_watch_canary_percent", model="a") is None
    assert m.value("modelctl_watch_canary_percent", model="b") == 10
    with pytest.raises(ValueError):
        m.inc("modelctl_watch_decisions_total", -1, model="b", kind="step")


def test_metrics_and_healthz_over_http():
    now = {"t": 100.0}
    health = Health(stale_after=90, monotonic=lambda: now["t"])
    m = controller_metrics()
    m.set("modelctl_watch_canary_percent", 25, model="m")
    server = Server(m, health).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        r = httpx.get(base + "/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert parsed(r.text)["modelctl_watch_canary_percent"] == {(("model", "m"),): 25.0}
        assert httpx.get(base + "/healthz").status_code == 200  # starting
        now["t"] = 200.0  # no cycle finished in 100 s
        r = httpx.get(base + "/healthz")
        assert r.status_code == 503 and "no cycle completed" in r.text
        health.beat()
        assert httpx.get(base + "/healthz").text.startswith("ok: last cycle 0s ago")
        now["t"] = 291.0
        assert httpx.get(base + "/healthz").status_code == 503
        assert httpx.get(base + "/nope").status_code == 404
    finally:
        server.stop()


@pytest.mark.parametrize(("text", "expected"), [("9109", ("0.0.0.0", 9109)), ("127.0.0.1:9109", ("127.0.0.1", 9109)),
                                                ("[::1]:80", ("::1", 80))])
def test_metrics_port_values(text, expected):
    assert parse_port(text) == expected


@pytest.mark.parametrize("text", ["", "0", "70000", "abc", "host:"])
def test_bad_metrics_port_values(text):
    with pytest.raises(ValueError):
        parse_port(text)


def test_a_controller_cycle_is_exported_and_reads_back():
    from modelctl.controller import CycleReport
    from modelctl.exposition import WatchMetrics
    from modelctl.watch import ENDED, WatchResult

    exported = WatchMetrics()
    exported.metrics.set("modelctl_watch_canary_percent", 5, model="gone-agent", version="1.0.1")
    exported.cycle(CycleReport(7, ["a", "b"], errors={"b": "damaged file", "*": "registry unreadable"},
                               ended=[WatchResult(ENDED, 0, "ended elsewhere", "gone-agent")],
                               fetch_error="cannot fetch", fetch_failures=4, last_fetch=1_700_000_000.0,
                               read_errors=["HTTP 503"], seconds=0.25))
    got = parsed(exported.metrics.text())
    assert got["modelctl_controller_consecutive_fetch_failures"] == {(): 4.0}
    assert got["modelctl_controller_fetch_failures_total"] == {(): 1.0}
    assert got["modelctl_controller_last_successful_fetch_timestamp_seconds"] == {(): 1_700_000_000.0}
    assert got["modelctl_controller_metrics_read_errors_total"] == {(): 1.0}
    assert got["modelctl_controller_model_errors_total"] == {(("model", "b"),): 1.0}  # "*" is the registry's
    assert got["modelctl_controller_followed_models"] == {(): 2.0}
    assert got["modelctl_watch_ended_total"] == {(("model", "gone-agent"), ("outcome", ENDED)): 1.0}
    assert "modelctl_watch_canary_percent" not in got  # a canary no longer followed shows no judgement
