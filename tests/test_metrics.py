"""Metrics providers against real HTTP servers on 127.0.0.1: parsing, limits, hostile answers."""
from __future__ import annotations

import gzip
import time

import pytest

from metrics_servers import (
    JsonMetricsServer,
    LocalServer,
    Reply,
    Request,
    Traffic,
    TrafficExporter,
    ensure_prometheus,
    free_port,
    prometheus_server,
)
from modelctl.analysis import ERROR, HOLD, ROLLBACK, AnalysisConfig, Judge
from modelctl.errors import InvalidName, MetricsError, UsageError
from modelctl.metrics import PROVIDERS, HttpJsonProvider, HttpLimits, PrometheusProvider, make_provider

FAST = HttpLimits(timeout=0.2, deadline=0.5, max_bytes=64 * 1024)
MODEL = "support-agent"
ACTIVE, CANARY = "2.3.1", "2.4.0"


@pytest.fixture
def json_server():
    with JsonMetricsServer(MODEL) as server:
        yield server


def json_provider(server: JsonMetricsServer, **kwargs) -> HttpJsonProvider:
    kwargs.setdefault("limits", FAST)
    return HttpJsonProvider(server.url, **kwargs)


# --------------------------------------------------------------------------- http-json


def test_http_json_reports_increases_since_the_first_poll(json_server):
    json_server.add(ACTIVE, requests=10_000, errors=100)
    json_server.add(CANARY, requests=50, errors=1)
    json_server.set(ACTIVE, latency_p95_ms=870.0, cost_per_request=0.0011)
    json_server.set(CANARY, latency_p95_ms=910.0, cost_per_request=0.0012)
    provider = json_provider(json_server)

    first = provider.fetch(MODEL, [ACTIVE, CANARY], 60)
    assert (first[ACTIVE].requests, first[ACTIVE].errors) == (0, 0)  # watch starts here
    assert first[CANARY].latency_p95_ms == 910.0

    json_server.traffic(ACTIVE, 2000, 0.01)
    json_server.traffic(CANARY, 400, 0.03)
    second = provider.fetch(MODEL, [ACTIVE, CANARY], 90)
    assert (second[ACTIVE].requests, second[ACTIVE].errors) == (2000, 20)
    assert (second[CANARY].requests, second[CANARY].errors) == (400, 12)
    assert second[ACTIVE].cost_per_request == 0.0011
    assert not second[CANARY].problems


def test_http_json_version_appearing_later_counts_from_zero(json_server):
    json_server.add(ACTIVE, requests=5000, errors=50)
    provider = json_provider(json_server)
    first = provider.fetch(MODEL, [ACTIVE, CANARY], 1)
    assert first[CANARY].problem("requests") == f"version {CANARY} is not in the response"
    json_server.add(CANARY, requests=300, errors=3)
    second = provider.fetch(MODEL, [ACTIVE, CANARY], 1)
    assert (second[CANARY].requests, second[CANARY].errors) == (300, 3)


def test_http_json_counter_reset_keeps_counting(json_server):
    json_server.add(CANARY, requests=1000, errors=10)
    provider = json_provider(json_server)
    provider.fetch(MODEL, [CANARY], 1)
    json_server.add(CANARY, requests=500, errors=5)
    assert provider.fetch(MODEL, [CANARY], 1)[CANARY].requests == 500
    json_server.versions[CANARY] = {"requests": 200, "errors": 2}  # the exporter restarted
    after = provider.fetch(MODEL, [CANARY], 1)[CANARY]
    assert (after.requests, after.errors) == (700, 7)


def test_http_json_numerator_counters_are_increases_and_other_keys_gauges(json_server):
    json_server.add(CANARY, requests=100, errors=0, hallucinations=4)
    json_server.set(CANARY, toxicity_score=0.2)
    config = AnalysisConfig.from_section({"metrics": {"hallucination_rate": {"type": "rate", "min_delta": 0.01}}})
    provider = json_provider(json_server, counters=config.counters())
    provider.fetch(MODEL, [CANARY], 1)
    json_server.add(CANARY, requests=100, hallucinations=6)
    sample = provider.fetch(MODEL, [CANARY], 1)[CANARY]
    assert sample.extra == {"hallucinations": 6, "toxicity_score": 0.2}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "12", None, True])
def test_http_json_bad_values_become_errors_not_exceptions(json_server, value):
    json_server.add(ACTIVE, requests=9000, errors=90)
    json_server.add(CANARY, requests=900, errors=9)
    provider = json_provider(json_server)
    provider.fetch(MODEL, [ACTIVE, CANARY], 1)
    json_server.versions[CANARY]["errors"] = value
    samples = provider.fetch(MODEL, [ACTIVE, CANARY], 1)
    assert samples[CANARY].problem("errors")
    decision = Judge(AnalysisConfig()).poll(samples[CANARY], samples[ACTIVE], {"error_rate": 0.01, "requests": 100})
    assert decision.results[0].verdict == ERROR


def test_http_json_stale_timestamp_is_a_problem(json_server):
    json_server.add(CANARY, requests=100, errors=1)
    json_server.timestamp = 1_000.0
    provider = json_provider(json_server, clock=lambda: 1_000.0 + 300, stale_seconds=120)
    assert "stale" in provider.fetch(MODEL, [CANARY], 1)[CANARY].problem("requests")
    json_server.timestamp = 1_250.0
    assert not provider.fetch(MODEL, [CANARY], 1)[CANARY].problems


def test_http_json_answer_for_another_model_is_refused(json_server):
    json_server.misbehave(Reply(200, {"model": "other-model", "versions": {}}))
    with pytest.raises(MetricsError, match="answers for model 'other-model'"):
        json_provider(json_server).fetch(MODEL, [CANARY], 1)


def test_invalid_model_name_never_reaches_the_url(json_server):
    with pytest.raises(InvalidName):
        json_provider(json_server).fetch("../admin", [CANARY], 1)
    assert json_server.requests == []


# --------------------------------------------------------------------------- hostile answers


HOSTILE = {
    "http 500": (Reply(500, "internal error"), "HTTP 500"),
    "empty body": (Reply(200, b""), "invalid JSON"),
    "broken json": (Reply(200, b'{"model": "support-agent", "versions": {'), "invalid JSON"),
    "json array": (Reply(200, [1, 2, 3]), "http-json format"),
    "versions not a map": (Reply(200, {"model": MODEL, "versions": [1]}), "http-json format"),
    "deeply nested": (Reply(200, b"[" * 50_000), "invalid JSON"),
    "not utf-8": (Reply(200, b"\xff\xfe{}"), "invalid JSON"),
    "huge declared body": (Reply(200, b"x" * (200 * 1024)), "more than 65536 bytes"),
    "huge undeclared body": (Reply(200, b"[" + b"1," * 100_000 + b"1]", length=-1), "more than 65536 bytes"),
    "gzip bomb": (Reply(200, gzip.compress(b" " * 5_000_000), headers={"Content-Encoding": "gzip"}),
                  "more than 65536 bytes"),
    "timeout": (Reply(200, b"{}", delay=2.0), "did not answer within"),
    "slow drip": (Reply(200, b'{"versions": {}}' * 20, drip=0.02), "no complete answer within 0.5s"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_raise_metrics_error_quickly(json_server, name):
    reply, message = HOSTILE[name]
    json_server.misbehave(reply)
    started = time.monotonic()
    with pytest.raises(MetricsError, match=message) as caught:
        json_provider(json_server).fetch(MODEL, [ACTIVE, CANARY], 1)
    assert time.monotonic() - started < 1.5  # deadline 0.5 s plus one read timeout at most
    assert "\n" not in str(caught.value)


def test_unreachable_endpoint_is_a_metrics_error():
    provider = HttpJsonProvider(f"http://127.0.0.1:{free_port()}/metrics/{{model}}", limits=FAST)
    with pytest.raises(MetricsError, match="cannot connect"):
        provider.fetch(MODEL, [CANARY], 1)


def test_redirect_within_the_same_host_is_followed(json_server):
    json_server.add(CANARY, requests=10, errors=0)

    def answer(request: Request) -> Reply:
        if request.path.startswith("/old/"):
            return Reply(302, b"", headers={"Location": f"/metrics/{MODEL}"})
        return Reply(200, json_server.document())

    json_server.misbehave(answer)
    provider = HttpJsonProvider(f"{json_server.base_url}/old/{{model}}", limits=FAST)
    assert provider.fetch(MODEL, [CANARY], 1)[CANARY].requests == 0
    assert [r.path for r in json_server.requests] == [f"/old/{MODEL}", f"/metrics/{MODEL}"]


def test_redirect_to_another_host_is_refused_and_never_followed(json_server):
    with LocalServer(lambda r: Reply(200, {"model": MODEL, "versions": {}})) as elsewhere:
        json_server.misbehave(Reply(302, b"", headers={"Location": f"{elsewhere.base_url}/steal"}))
        provider = HttpJsonProvider(json_server.url, limits=FAST, token="s3cret-token")
        with pytest.raises(MetricsError, match="redirects to another host"):
            provider.fetch(MODEL, [CANARY], 1)
        assert elsewhere.requests == []


def test_hostile_endpoint_never_rolls_back_and_holds_after_the_error_budget(json_server):
    json_server.add(ACTIVE, requests=10_000, errors=100)
    json_server.add(CANARY, requests=1000, errors=10)
    provider = json_provider(json_server)
    judge = Judge(AnalysisConfig())
    replies = [Reply(500, "x"), Reply(200, b"nope"), Reply(200, b"", delay=1.0),
               Reply(200, {"model": MODEL, "versions": {CANARY: {"requests": float("nan"), "errors": 1}}}),
               Reply(200, {"model": MODEL, "versions": {}})]
    actions = []
    for reply in replies:
        json_server.misbehave(reply)
        try:
            samples = provider.fetch(MODEL, [ACTIVE, CANARY], 1)
        except MetricsError as exc:
            decision = judge.unavailable(str(exc))
        else:
            decision = judge.poll(samples[CANARY], samples[ACTIVE], {"error_rate": 0.01, "requests": 100})
        actions.append(decision.action)
    assert ROLLBACK not in actions
    assert actions[-1] == HOLD


# --------------------------------------------------------------------------- make_provider, token


def test_make_provider_reads_config_and_overrides():
    config = {"metrics": {"provider": "http-json", "url": "http://127.0.0.1:1/m/{model}", "timeout": 0.5,
                          "max_bytes": 2048}}
    provider = make_provider(config, env={})
    assert isinstance(provider, HttpJsonProvider)
    assert provider.url == "http://127.0.0.1:1/m/{model}"
    assert (provider.limits.timeout, provider.limits.poll_deadline, provider.limits.max_bytes) == (0.5, 1.0, 2048)
    prom = make_provider(config, provider="prometheus", env={})
    assert isinstance(prom, PrometheusProvider) and prom.url == "http://127.0.0.1:9090"
    assert make_provider(config, provider="prometheus", url="https://prom.example:9090", env={}).url == \
        "https://prom.example:9090"
    assert set(PROVIDERS) == {"prometheus", "http-json"}


@pytest.mark.parametrize("config, kwargs, message", [
    ({}, {"provider": "graphite"}, "unknown metrics provider"),
    ({"metrics": {"token_env": "MISSING_TOKEN"}}, {}, "MISSING_TOKEN, which is not set"),
    ({"metrics": {"token_env": "TOK", "url": "http://metrics.example/{model}"}}, {"env": {"TOK": "abc"}},
     "plain http"),
    ({}, {"url": "ftp://127.0.0.1/x"}, "http:// or https://"),
    ({}, {"url": "http://user:pw@127.0.0.1/x"}, "credentials"),
    ({"metrics": {"timeout": 0}}, {}, "metrics.timeout"),
    ({"metrics": {"max_bytes": "big"}}, {}, "metrics.max_bytes"),
])
def test_make_provider_refuses_bad_settings(config, kwargs, message):
    kwargs.setdefault("env", {})
    with pytest.raises(UsageError, match=message):
        make_provider(config, **kwargs)


def test_bearer_token_is_sent_but_never_shown(json_server):
    secret = "s3cret-token-value"
    config = {"metrics": {"url": json_server.url, "token_env": "METRICS_TOKEN", "timeout": 0.2}}
    provider = make_provider(config, env={"METRICS_TOKEN": secret})
    json_server.add(CANARY, requests=1, errors=0)
    provider.fetch(MODEL, [CANARY], 1)
    assert json_server.requests[-1].headers["authorization"] == f"Bearer {secret}"
    json_server.misbehave(Reply(401, {"error": "bad token"}))
    with pytest.raises(MetricsError) as caught:
        provider.fetch(MODEL, [CANARY], 1)
    assert secret not in str(caught.value)
    assert secret not in repr(provider) and secret not in str(vars(provider).get("limits"))


# --------------------------------------------------------------------------- prometheus API


NOW = 1_700_000_000.0


def vector(*values, ts=NOW - 2):
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"le": str(i)}, "value": [ts, v]} for i, v in enumerate(values)]}}


class FakePrometheus(LocalServer):
    """The Prometheus HTTP API answering scripted documents per quantity."""

    def __init__(self, answers):
        super().__init__(self._answer)
        self.answers = answers  # metric name in the query -> Reply or JSON document

    def queries(self) -> list[str]:
        return [r.query["query"][0] for r in self.requests]

    def _answer(self, request: Request) -> Reply:
        if request.path != "/api/v1/query":
            return Reply(404, "not found")
        query = request.query["query"][0]
        for needle, answer in self.answers.items():
            if needle in query:
                return answer if isinstance(answer, Reply) else Reply(200, answer)
        return Reply(200, vector())


HEALTHY = {
    "histogram_quantile": vector("870.5"),
    "llm_cost_total": vector("0.0011"),
    "llm_errors_total": vector("12"),
    "llm_requests_total": vector("1200"),
}


def prom_provider(server, **kwargs):
    kwargs.setdefault("limits", FAST)
    return PrometheusProvider(server.base_url, clock=lambda: NOW, **kwargs)


def test_prometheus_renders_templates_and_reads_one_series_per_quantity():
    with FakePrometheus(HEALTHY) as server:
        samples = prom_provider(server).fetch(MODEL, [ACTIVE, CANARY], 299.2)
        queries = server.queries()
    sample = samples[CANARY]
    assert (sample.requests, sample.errors, sample.latency_p95_ms, sample.cost_per_request) == (1200, 12, 870.5, 0.0011)
    assert sample.timestamp == NOW - 2 and not sample.problems
    assert len(queries) == 8
    assert f'llm_requests_total{{model="{MODEL}",version="{CANARY}"}}[300s]' in queries[4]


def test_prometheus_since_is_at_least_one_second():
    with FakePrometheus(HEALTHY) as server:
        prom_provider(server, queries={"requests": "x[{since}s]"}).fetch(MODEL, [CANARY], 0)
        assert server.queries() == ["x[1s]"]


@pytest.mark.parametrize("answer, problem", [
    (vector("NaN"), "value is NaN"),
    (vector("+Inf"), "value is +Inf"),
    (vector("-3"), "negative"),
    (vector("1", "2"), "2 series where one is expected"),
    (vector(), "no series"),
    (vector("5", ts=NOW - 3600), "stale"),
    ({"status": "success", "data": {"resultType": "scalar", "result": [NOW, "1"]}}, "instant vector, got scalar"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "instant vector, got matrix"),
    (Reply(400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}), "bad_data: parse error"),
    ({"status": "error", "errorType": "timeout", "error": "query timed out"}, "timeout"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": "oops"}]}}, "no [timestamp, value]"),
])
def test_prometheus_bad_results_are_per_quantity_problems(answer, problem):
    with FakePrometheus({**HEALTHY, "llm_errors_total": answer}) as server:
        sample = prom_provider(server).fetch(MODEL, [CANARY], 60)[CANARY]
    assert problem in sample.problem("errors")
    assert sample.requests == 1200  # the other quantities still count
    result = Judge(AnalysisConfig()).poll(sample, None, {"error_rate": 0.01}).results[0]
    assert result.verdict == ERROR


@pytest.mark.parametrize("answer, message", [
    (Reply(503, "Service Unavailable"), "HTTP 503"),
    (Reply(200, b"<html>login</html>"), "invalid JSON"),
    (Reply(200, {"hello": "world"}), "Prometheus HTTP API"),
    (Reply(200, b"x" * 100_000), "more than 65536 bytes"),
])
def test_prometheus_unusable_answers_raise_metrics_error(answer, message):
    with FakePrometheus({"llm_requests_total": answer}) as server:
        with pytest.raises(MetricsError, match=message):
            prom_provider(server).fetch(MODEL, [CANARY], 60)


def test_prometheus_deadline_covers_the_whole_poll():
    slow = {key: Reply(200, value, delay=0.15) for key, value in HEALTHY.items()}
    with FakePrometheus(slow) as server:
        started = time.monotonic()
        with pytest.raises(MetricsError, match="no complete answer within 0.5s"):
            prom_provider(server).fetch(MODEL, [ACTIVE, CANARY], 60)
        assert time.monotonic() - started < 1.2
        assert len(server.requests) < 8


# --------------------------------------------------------------------------- real Prometheus


@pytest.mark.e2e
def test_prometheus_provider_reads_real_numbers_from_a_real_prometheus(tmp_path):
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    traffic = {ACTIVE: Traffic(rps=200, error_rate=0.01, latency_ms=800, cost_per_request=0.0011),
               CANARY: Traffic(rps=100, error_rate=0.03, latency_ms=1200, cost_per_request=0.0015)}
    with TrafficExporter(MODEL, traffic) as exporter, \
            prometheus_server([exporter.target], tmp_path / "prom", binary=binary) as prom:
        started = time.monotonic()
        provider = PrometheusProvider(prom.url, limits=HttpLimits(timeout=2, deadline=10))
        deadline = started + 30
        while True:  # wait for a few scrapes: increase() needs two samples in its window
            samples = provider.fetch(MODEL, [ACTIVE, CANARY], 60)
            ready = all(not s.problems and s.requests and s.requests >= 300 for s in samples.values())
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        totals = {v: dict(t) for v, t in exporter.totals.items()}
    assert ready, samples
    for version, t in traffic.items():
        sample = samples[version]
        assert sample.requests <= totals[version]["requests"] * 1.2  # increase() extrapolates a little
        assert sample.errors / sample.requests == pytest.approx(t.error_rate, rel=0.25)
        assert sample.cost_per_request == pytest.approx(t.cost_per_request, rel=0.02)
        assert t.latency_ms * 0.8 < sample.latency_p95_ms <= t.latency_ms * 1.25
    judged = Judge(AnalysisConfig()).poll(samples[CANARY], samples[ACTIVE], {"error_rate": 0.01, "requests": 100})
    assert judged.results[0].canary_value > judged.results[0].baseline_value
