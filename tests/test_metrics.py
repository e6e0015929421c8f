"""Metrics providers against real HTTP servers on 127.0.0.1: parsing, limits, hostile answers."""
from __future__ import annotations

import gzip
import json
import math
import time

import httpx
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

from modelctl.analysis import HOLD, ROLLBACK, AnalysisConfig, Judge
from modelctl.errors import InvalidName, MetricsError, UsageError
from modelctl.metrics import (
    DEFAULT_QUERIES,
    PROVIDERS,
    HttpJsonProvider,
    HttpLimits,
    PrometheusProvider,
    make_provider,
    take_poll,
)
from modelctl.metrics.base import ReadRequest

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


def test_http_json_reports_cumulative_counters_buckets_cost_and_gauges(json_server):
    json_server.add(ACTIVE, requests=10_000, errors=100, cost_total=11.2)
    json_server.set(ACTIVE, latency_bucket={"250": 900, "500": 9000, "1000": 9990, "+Inf": 10_000},
                    latency_p95_ms=870.0)
    json_server.add(CANARY, requests=50, errors=1)
    provider = json_provider(json_server)
    readings = provider.read(MODEL, [ACTIVE, CANARY], 60)
    control = readings[ACTIVE].segments[""]
    assert (control.requests, dict(control.events), control.cost_total) == (10_000, {"errors": 100}, 11.2)
    assert control.latency_buckets == ((250, 900), (500, 9000), (1000, 9990), (math.inf, 10_000))
    assert control.gauges == {"latency_p95_ms": 870.0}
    assert not readings[ACTIVE].problems
    json_server.traffic(CANARY, 400, 0.03)
    assert readings[CANARY].segments[""].requests == 50
    assert provider.read(MODEL, [CANARY], 90)[CANARY].segments[""].requests == 450  # cumulative, as served


def test_http_json_version_missing_from_the_answer_is_absent(json_server):
    json_server.add(ACTIVE, requests=5000, errors=50)
    readings = json_provider(json_server).read(MODEL, [ACTIVE, CANARY], 1)
    assert set(readings) == {ACTIVE}


def test_http_json_segments_are_read_with_their_own_problems(json_server):
    json_server.add(CANARY, requests=1000, errors=10)
    json_server.set(CANARY, segments={"eu": {"requests": 100, "errors": 3,
                                             "latency_bucket": {"500": 90, "+Inf": 100}},
                                      "us": {"requests": 900, "errors": float("nan")}})
    reading = json_provider(json_server).read(MODEL, [CANARY], 1)[CANARY]
    assert set(reading.segments) == {"", "eu", "us"}
    assert reading.segments["eu"].events == {"errors": 3}
    assert reading.segments["eu"].latency_buckets == ((500, 90), (math.inf, 100))
    assert reading.problems == {"us/errors": "nan"}
    assert reading.segments["us"].requests == 900


@pytest.mark.parametrize("buckets, problem", [
    ({"250": 5, "500": 3, "+Inf": 9}, "must not decrease"),
    ({"250": 5, "500": 7}, '"+Inf" bucket'),
    ({"fast": 5, "+Inf": 9}, "not a number"),
    ({"250": -1, "+Inf": 9}, "negative"),
    ([1, 2], "must be an object"),
])
def test_http_json_bad_histograms_are_a_problem_of_the_buckets_only(json_server, buckets, problem):
    json_server.add(CANARY, requests=9, errors=0)
    json_server.set(CANARY, latency_bucket=buckets)
    reading = json_provider(json_server).read(MODEL, [CANARY], 1)[CANARY]
    assert problem in reading.problems["latency_buckets"]
    assert reading.segments[""].requests == 9 and reading.segments[""].latency_buckets == ()


def test_http_json_replicas_are_summed_and_a_restart_is_an_error_not_an_increase(json_server):
    replicas = {"r1": {"requests": 4000, "errors": 40, "latency_bucket": {"500": 3000, "+Inf": 4000}},
                "r2": {"requests": 3000, "errors": 30, "latency_bucket": {"500": 2000, "+Inf": 3000}}}
    json_server.set(ACTIVE, replicas=replicas, latency_p95_ms=800.0)
    provider = json_provider(json_server)
    whole = provider.read(MODEL, [ACTIVE], 1)[ACTIVE]
    assert whole.segments[""].requests == 7000 and whole.segments[""].events == {"errors": 70}
    assert whole.segments[""].latency_buckets == ((500, 5000), (math.inf, 7000))
    assert whole.segments[""].gauges == {"latency_p95_ms": 800.0} and not whole.problems
    # r2 restarts while r1 keeps serving: the sum still rises, but r2's drop is seen
    replicas["r1"] = {"requests": 9000, "errors": 90, "latency_bucket": {"500": 7000, "+Inf": 9000}}
    replicas["r2"] = {"requests": 50, "errors": 1, "latency_bucket": {"500": 40, "+Inf": 50}}
    after = provider.read(MODEL, [ACTIVE], 1)[ACTIVE]
    assert after.problems["*"].startswith("replica r2 restarted (requests 3000 -> 50)")
    assert after.segments[""].requests == 9050
    replicas["r2"] = {"requests": 80, "errors": 1, "latency_bucket": {"500": 70, "+Inf": 80}}
    assert not provider.read(MODEL, [ACTIVE], 1)[ACTIVE].problems  # counted again from the new values
    replicas["r3"] = {"requests": 5, "errors": 0, "latency_bucket": {"500": 5, "+Inf": 5}}
    assert "replica r3 appeared" in provider.read(MODEL, [ACTIVE], 1)[ACTIVE].problems["*"]
    del replicas["r1"]
    assert provider.read(MODEL, [ACTIVE], 1)[ACTIVE].problems["*"] == "replica r1 is missing from the answer"


def test_http_json_replica_memory_survives_a_restarted_watch(json_server):
    replicas = {"r1": {"requests": 4000, "errors": 40}}
    json_server.set(CANARY, replicas=replicas)
    first = json_provider(json_server)
    first.read(MODEL, [CANARY], 1)
    saved = json.loads(json.dumps(first.export_state()))
    replicas["r1"] = {"requests": 10, "errors": 0}
    later = json_provider(json_server)
    assert later.restore_state(saved)
    assert "restarted" in later.read(MODEL, [CANARY], 1)[CANARY].problems["*"]
    for bad in ({"url": saved["url"], "replicas": [1]}, {"url": "http://elsewhere/x"}, None):
        assert not json_provider(json_server).restore_state(bad)


def test_http_json_event_counters_come_from_the_configured_metrics(json_server):
    json_server.add(CANARY, requests=100, errors=0, hallucinations=4)
    json_server.set(CANARY, toxicity_score=0.2)
    config = AnalysisConfig.from_section({"metrics": {"hallucination_rate": {"type": "rate", "min_delta": 0.01}}})
    provider = json_provider(json_server, counters=config.counters())
    counters = provider.read(MODEL, [CANARY], 1)[CANARY].segments[""]
    assert counters.events == {"errors": 0, "hallucinations": 4}
    assert counters.gauges == {"toxicity_score": 0.2}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "12", None, True])
def test_http_json_bad_values_become_problems_not_exceptions(json_server, value):
    json_server.add(ACTIVE, requests=9000, errors=90)
    json_server.add(CANARY, requests=900, errors=9)
    json_server.versions[CANARY]["errors"] = value
    reading = json_provider(json_server).read(MODEL, [ACTIVE, CANARY], 1)[CANARY]
    assert reading.problem("errors")
    assert "errors" not in reading.segments[""].events


def test_http_json_stale_timestamp_is_a_problem(json_server):
    json_server.add(CANARY, requests=100, errors=1)
    json_server.timestamp = 1_000.0
    provider = json_provider(json_server, clock=lambda: 1_000.0 + 300, stale_seconds=120)
    assert "stale" in provider.read(MODEL, [CANARY], 1)[CANARY].problem("requests")
    json_server.timestamp = 1_250.0
    assert not provider.read(MODEL, [CANARY], 1)[CANARY].problems


def test_http_json_answer_for_another_model_is_refused(json_server):
    json_server.misbehave(Reply(200, {"model": "other-model", "versions": {}}))
    with pytest.raises(MetricsError, match="answers for model 'other-model'"):
        json_provider(json_server).read(MODEL, [CANARY], 1)


def test_invalid_model_name_never_reaches_the_url(json_server):
    with pytest.raises(InvalidName):
        json_provider(json_server).read("../admin", [CANARY], 1)
    assert json_server.requests == []


def test_time_left_caps_the_whole_read(json_server):
    """watch passes what is left of --max-duration: a slow server cannot carry it past the bound."""
    json_server.misbehave(Reply(200, b"{}", delay=2.0))
    provider = json_provider(json_server, limits=HttpLimits(timeout=5, deadline=10))
    started = time.monotonic()
    with pytest.raises(MetricsError, match="within 0.3s"):
        provider.read(MODEL, [CANARY], 1, time_left=0.3)
    assert time.monotonic() - started < 1.5


def test_take_poll_turns_any_failure_into_an_error_poll(json_server):
    json_server.add(ACTIVE, requests=10, errors=0)
    provider = json_provider(json_server)
    poll = take_poll(provider, MODEL, control=ACTIVE, canary=CANARY, percent=5, versions=[ACTIVE, CANARY],
                     since_seconds=1, clock=lambda: 123.0, canary_id="x")
    assert (poll.time, poll.control, poll.canary, poll.percent, poll.error) == (123.0, ACTIVE, CANARY, 5, None)
    assert set(poll.readings) == {ACTIVE}
    json_server.misbehave(Reply(500, "no"))
    poll = take_poll(provider, MODEL, control=ACTIVE, canary=CANARY, percent=5, versions=[ACTIVE, CANARY],
                     since_seconds=1)
    assert "HTTP 500" in poll.error and poll.readings == {}


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
        json_provider(json_server).read(MODEL, [ACTIVE, CANARY], 1)
    assert time.monotonic() - started < 1.5  # deadline 0.5 s plus one read timeout at most
    assert "\n" not in str(caught.value)


def test_unreachable_endpoint_is_a_metrics_error():
    provider = HttpJsonProvider(f"http://127.0.0.1:{free_port()}/metrics/{{model}}", limits=FAST)
    with pytest.raises(MetricsError, match="cannot connect"):
        provider.read(MODEL, [CANARY], 1)


def test_redirect_within_the_same_host_is_followed(json_server):
    json_server.add(CANARY, requests=10, errors=0)

    def answer(request: Request) -> Reply:
        if request.path.startswith("/old/"):
            return Reply(302, b"", headers={"Location": f"/metrics/{MODEL}"})
        return Reply(200, json_server.document())

    json_server.misbehave(answer)
    provider = HttpJsonProvider(f"{json_server.base_url}/old/{{model}}", limits=FAST)
    assert provider.read(MODEL, [CANARY], 1)[CANARY].segments[""].requests == 10
    assert [r.path for r in json_server.requests] == [f"/old/{MODEL}", f"/metrics/{MODEL}"]


def test_redirect_to_another_host_is_refused_and_never_followed(json_server):
    with LocalServer(lambda r: Reply(200, {"model": MODEL, "versions": {}})) as elsewhere:
        json_server.misbehave(Reply(302, b"", headers={"Location": f"{elsewhere.base_url}/steal"}))
        provider = HttpJsonProvider(json_server.url, limits=FAST, token="s3cret-token")
        with pytest.raises(MetricsError, match="redirects to another host"):
            provider.read(MODEL, [CANARY], 1)
        assert elsewhere.requests == []


def test_hostile_endpoint_never_rolls_back_and_holds_after_the_error_budget(json_server):
    json_server.add(ACTIVE, requests=10_000, errors=100)
    json_server.add(CANARY, requests=1000, errors=10)
    provider = json_provider(json_server)
    judge = Judge(AnalysisConfig(), prior={"error_rate": 0.01, "requests": 100})
    replies = [None, Reply(500, "x"), Reply(200, b"nope"), Reply(200, b"", delay=1.0),
               Reply(200, {"model": MODEL, "versions": {CANARY: {"requests": float("nan"), "errors": 1}}}),
               Reply(200, {"model": MODEL, "versions": {}}),
               Reply(200, {"model": MODEL, "versions": {ACTIVE: {"requests": 0, "errors": 0},
                                                        CANARY: {"requests": 10 ** 9, "errors": 10 ** 8}}})]
    actions = []
    for i, reply in enumerate(replies):
        json_server.misbehave(reply)
        poll = take_poll(provider, MODEL, control=ACTIVE, canary=CANARY, percent=10, versions=[ACTIVE, CANARY],
                         since_seconds=1, clock=lambda i=i: 1000.0 + i)
        actions.append(judge.observe(poll).action)
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
    provider.read(MODEL, [CANARY], 1)
    assert json_server.requests[-1].headers["authorization"] == f"Bearer {secret}"
    json_server.misbehave(Reply(401, {"error": "bad token"}))
    with pytest.raises(MetricsError) as caught:
        provider.read(MODEL, [CANARY], 1)
    assert secret not in str(caught.value)
    assert secret not in repr(provider) and secret not in str(vars(provider).get("limits"))


# --------------------------------------------------------------------------- prometheus API


NOW = 1_700_000_000.0


def vector(*values, ts=NOW - 2, labels=None):
    """An instant vector: one series per value (with `labels`, a list of label dicts, one per value)."""
    labels = labels or [{} for _ in values]
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": lab, "value": [ts, v]} for lab, v in zip(labels, values)]}}


def buckets(*pairs, segment=None):
    labels = [{"le": le, **({"segment": segment} if segment else {})} for le, _ in pairs]
    return vector(*[c for _, c in pairs], labels=labels)


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
    "llm_latency_ms_bucket": buckets(("500", "900"), ("1000", "1190"), ("+Inf", "1200")),
    "llm_cost_total": vector("1.32"),
    "llm_errors_total": vector("12"),
    "llm_requests_total": vector("1200"),
}


def prom_provider(server, **kwargs):
    kwargs.setdefault("limits", FAST)
    return PrometheusProvider(server.base_url, clock=lambda: NOW, **kwargs)


def test_prometheus_renders_templates_and_reads_counters_and_buckets():
    with FakePrometheus(HEALTHY) as server:
        readings = prom_provider(server).read(MODEL, [ACTIVE, CANARY], 299.2)
        queries = server.queries()
    reading = readings[CANARY]
    whole = reading.segments[""]
    assert (whole.requests, dict(whole.events), whole.cost_total) == (1200, {"errors": 12}, 1.32)
    assert whole.latency_buckets == ((500, 900), (1000, 1190), (math.inf, 1200))
    assert reading.timestamp == NOW - 2 and not reading.problems
    assert len(queries) == 8
    assert f'sum by (segment) (llm_requests_total{{model="{MODEL}",version="{CANARY}"}})' in queries[4]
    assert f'sum by (le, segment) (llm_latency_ms_bucket{{model="{MODEL}",version="{CANARY}"}})' in queries


def test_prometheus_segments_from_the_segment_label_and_the_whole_is_their_sum():
    answers = {
        "llm_requests_total": vector("100", "900", labels=[{"segment": "eu"}, {"segment": "us"}]),
        "llm_errors_total": vector("6", "9", labels=[{"segment": "eu"}, {"segment": "us"}]),
        "llm_latency_ms_bucket": {"status": "success", "data": {"resultType": "vector", "result":
                                  buckets(("500", "90"), ("+Inf", "100"), segment="eu")["data"]["result"]
                                  + buckets(("500", "800"), ("+Inf", "900"), segment="us")["data"]["result"]}},
        "llm_cost_total": vector("1.0"),
    }
    with FakePrometheus(answers) as server:
        reading = prom_provider(server, limits=HttpLimits(timeout=5, deadline=10)).read(MODEL, [CANARY], 60)[CANARY]
    assert reading.segments["eu"].events == {"errors": 6} and reading.segments["us"].requests == 900
    assert reading.segments[""].requests == 1000 and reading.segments[""].events == {"errors": 15}
    assert reading.segments[""].latency_buckets == ((500, 890), (math.inf, 1000))
    assert reading.segments[""].cost_total == 1.0 and not reading.problems


def test_prometheus_quantities_other_than_counters_are_gauges():
    answers = {**HEALTHY, "histogram_quantile": vector("870.5")}
    queries = {"requests": DEFAULT_QUERIES["requests"],
               "latency_p95_ms": 'histogram_quantile(0.95, sum by (le) (rate(x_bucket{version="{version}"}[5m])))'}
    with FakePrometheus(answers) as server:
        whole = prom_provider(server, queries=queries).read(MODEL, [CANARY], 60)[CANARY].segments[""]
    assert whole.gauges == {"latency_p95_ms": 870.5} and whole.requests == 1200


def test_prometheus_since_is_at_least_one_second():
    with FakePrometheus(HEALTHY) as server:
        prom_provider(server, queries={"requests": "x[{since}s]"}).read(MODEL, [CANARY], 0)
        assert server.queries() == ["x[1s]"]


def test_prometheus_no_error_series_while_requests_flow_is_zero_errors():
    with FakePrometheus({**HEALTHY, "llm_errors_total": vector()}) as server:
        reading = prom_provider(server).read(MODEL, [CANARY], 60)[CANARY]
    assert reading.segments[""].events == {"errors": 0} and not reading.problems


def test_prometheus_version_without_any_series_is_absent():
    with FakePrometheus({}) as server:
        assert prom_provider(server).read(MODEL, [CANARY], 60) == {}


@pytest.mark.parametrize("answer, problem", [
    (vector("NaN"), "value is NaN"),
    (vector("+Inf"), "value is +Inf"),
    (vector("-3"), "negative"),
    (vector("1", "2"), "2 series where one per segment is expected"),
    (vector("5", ts=NOW - 3600), "stale"),
    ({"status": "success", "data": {"resultType": "scalar", "result": [NOW, "1"]}}, "instant vector, got scalar"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "instant vector, got matrix"),
    (Reply(400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}), "bad_data: parse error"),
    ({"status": "error", "errorType": "timeout", "error": "query timed out"}, "timeout"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": "oops"}]}}, "no [timestamp, value]"),
])
def test_prometheus_bad_results_are_per_quantity_problems(answer, problem):
    with FakePrometheus({**HEALTHY, "llm_errors_total": answer}) as server:
        reading = prom_provider(server).read(MODEL, [CANARY], 60)[CANARY]
    assert problem in reading.problem("errors")
    assert reading.segments[""].requests == 1200  # the other quantities still count


@pytest.mark.parametrize("answer, problem", [
    (buckets(("500", "9"), ("+Inf", "5")), "must not decrease"),
    (buckets(("500", "9"), ("1000", "12")), '"+Inf" bucket'),
    (vector("5"), "without an le label"),
])
def test_prometheus_bad_histograms_are_a_problem_of_the_buckets(answer, problem):
    with FakePrometheus({**HEALTHY, "llm_latency_ms_bucket": answer}) as server:
        reading = prom_provider(server).read(MODEL, [CANARY], 60)[CANARY]
    assert problem in reading.problem("latency_buckets")


def test_prometheus_warnings_make_the_poll_an_error():
    partial = {**vector("1200"), "warnings": ["remote store eu-1 failed: partial response"]}
    with FakePrometheus({**HEALTHY, "llm_requests_total": partial}) as server:
        with pytest.raises(MetricsError, match="warnings .a partial result.: remote store eu-1 failed"):
            prom_provider(server).read(MODEL, [CANARY], 60)


@pytest.mark.parametrize("answer, message", [
    (Reply(503, "Service Unavailable"), "HTTP 503"),
    (Reply(200, b"<html>login</html>"), "invalid JSON"),
    (Reply(200, {"hello": "world"}), "Prometheus HTTP API"),
    (Reply(200, b"x" * 100_000), "more than 65536 bytes"),
])
def test_prometheus_unusable_answers_raise_metrics_error(answer, message):
    with FakePrometheus({"llm_requests_total": answer}) as server:
        with pytest.raises(MetricsError, match=message):
            prom_provider(server).read(MODEL, [CANARY], 60)


def test_prometheus_deadline_covers_the_whole_poll():
    slow = {key: Reply(200, value, delay=0.15) for key, value in HEALTHY.items()}
    with FakePrometheus(slow) as server:
        started = time.monotonic()
        with pytest.raises(MetricsError, match="no complete answer within 0.5s"):
            prom_provider(server).read(MODEL, [ACTIVE, CANARY], 60)
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
        while True:  # wait for a few scrapes
            readings = provider.read(MODEL, [ACTIVE, CANARY], 60)
            ready = len(readings) == 2 and all(not r.problems and (r.segments[""].requests or 0) >= 300
                                               for r in readings.values())
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        totals = {v: dict(t) for v, t in exporter.totals.items()}
    assert ready, readings
    for version, t in traffic.items():
        whole = readings[version].segments[""]
        assert whole.requests <= totals[version]["requests"]  # raw counters, as scraped
        assert whole.events["errors"] / whole.requests == pytest.approx(t.error_rate, rel=0.25)
        assert whole.cost_total / whole.requests == pytest.approx(t.cost_per_request, rel=0.02)
        assert whole.latency_buckets[-1] == (math.inf, whole.requests)


# --------------------------------------------------------------------------- batched reads (watch --all)


def test_batched_templates_keep_the_model_and_version_labels():
    from modelctl.metrics.prometheus import batch_template, render_batch

    got = {q: batch_template(t) for q, t in DEFAULT_QUERIES.items()}
    assert got["requests"] == ('sum by (model, version, {segment}) (llm_requests_total{model=~"{models}",'
                               'version=~"{versions}"})', "model", "version")
    assert got["latency_bucket"][0].startswith("sum by (model, version, le, {segment}) (llm_latency_ms_bucket")
    assert batch_template('sum(increase(x{service="{model}",v="{version}"}[{since}s]))') == (
        'sum by (service, v) (increase(x{service=~"{models}",v=~"{versions}"}[{since}s]))', "service", "v")
    # no matcher to widen, or an aggregation that would drop the labels: read per model
    assert batch_template('sum(x{version="{version}"})') is None
    assert batch_template('x{model="{model}",version="{version}"}') is None
    assert batch_template('sum without (pod) (x{model="{model}",version="{version}"})') is None
    request = ReadRequest("a-b", ("1.0.0", "1.0.0-rc.1"), 30)
    query = render_batch(got["requests"][0], [request, ReadRequest("c", ("1.0.0",), 30)])
    # RE2-escaped, then escaped again for the PromQL string: a "." or "-" is never a regex operator
    assert r'model=~"a\\-b|c"' in query and r'version=~"1\\.0\\.0|1\\.0\\.0\\-rc\\.1"' in query


def labelled(rows):
    """An instant vector from (labels, value) rows."""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [NOW - 2, str(value)]} for labels, value in rows]}}


def fleet_answers(models):
    """Answers of the batched default queries: each model's control and canary, with distinct figures."""
    def rows(metric):
        out = []
        for i, model in enumerate(models):
            for j, version in enumerate((ACTIVE, CANARY)):
                base = {"model": model, "version": version}
                if metric == "bucket":
                    total = 1000 * (i + 1) + j
                    out += [({**base, "le": "500"}, total - 10), ({**base, "le": "+Inf"}, total)]
                else:
                    out.append((base, {"requests": 1000 * (i + 1) + j, "errors": 10 * i + j, "cost": 1.5 * i}[metric]))
        return out

    return {"llm_requests_total": labelled(rows("requests")), "llm_errors_total": labelled(rows("errors")),
            "llm_cost_total": labelled(rows("cost")), "llm_latency_ms_bucket": labelled(rows("bucket"))}


@pytest.mark.parametrize("count", [1, 5, 20])
def test_prometheus_batch_is_one_query_per_quantity_whatever_the_number_of_models(count):
    models = [f"model-{i:02d}" for i in range(count)]
    with FakePrometheus(fleet_answers(models)) as server:
        answer = prom_provider(server).read_many([ReadRequest(m, (ACTIVE, CANARY), 60) for m in models])
        queries = server.queries()
    assert len(queries) == len(DEFAULT_QUERIES)  # 4, for 1, 5 or 20 models
    for i, model in enumerate(models):
        canary = answer[model][CANARY].segments[""]
        assert (canary.requests, canary.events["errors"], canary.cost_total) == (1000 * (i + 1) + 1, 10 * i + 1, 1.5 * i)
        assert canary.latency_buckets == ((500, 1000 * (i + 1) + 1 - 10), (math.inf, 1000 * (i + 1) + 1))


def test_prometheus_batch_failure_is_every_models_error_and_a_missing_model_has_no_reading():
    with FakePrometheus({"llm_": Reply(503, "overloaded")}) as server:
        answer = prom_provider(server).read_many([ReadRequest("a", (ACTIVE,), 60), ReadRequest("b", (ACTIVE,), 60)])
    assert all(isinstance(a, MetricsError) and "HTTP 503" in str(a) for a in answer.values())
    with FakePrometheus(fleet_answers(["a"])) as server:
        answer = prom_provider(server).read_many([ReadRequest("a", (ACTIVE,), 60), ReadRequest("b", (ACTIVE,), 60)])
    assert set(answer["a"]) == {ACTIVE} and answer["b"] == {}


def test_prometheus_since_templates_are_batched_per_distinct_window():
    queries = {"requests": 'sum(increase(llm_requests_total{model="{model}",version="{version}"}[{since}s]))'}
    with FakePrometheus({}) as server:
        prom_provider(server, queries=queries).read_many(
            [ReadRequest("a", (ACTIVE,), 59.5), ReadRequest("b", (ACTIVE,), 60), ReadRequest("c", (ACTIVE,), 120)])
        sent = server.queries()
    assert len(sent) == 2 and '[60s]' in sent[0] and 'model=~"a|b"' in sent[0] and '[120s]' in sent[1]


class FleetJsonServer(LocalServer):
    """http-json for many models: `/metrics` answers every model in one document, `/metrics/NAME` one."""

    def __init__(self, models):
        super().__init__(self._answer)
        self.models = {m: {"versions": {ACTIVE: {"requests": 100 * (i + 1), "errors": i},
                                        CANARY: {"replicas": {"r1": {"requests": 10 * (i + 1), "errors": 1}}}}}
                       for i, m in enumerate(models)}

    def _answer(self, request: Request) -> Reply:
        if request.path == "/metrics":
            return Reply(200, {"timestamp": NOW - 1, "models": self.models})
        name = request.path.rpartition("/")[2]
        if name not in self.models:
            return Reply(404, {"error": "no such model"})
        return Reply(200, {"model": name, "timestamp": NOW - 1, **self.models[name]})


@pytest.mark.parametrize("count", [1, 5, 20])
def test_http_json_batch_is_one_get_per_cycle_without_model_in_the_url(count):
    models = [f"model-{i:02d}" for i in range(count)]
    requests = [ReadRequest(m, (ACTIVE, CANARY), 60) for m in models]
    with FleetJsonServer(models) as server:
        batched = HttpJsonProvider(f"{server.base_url}/metrics", limits=FAST, clock=lambda: NOW)
        one_each = HttpJsonProvider(f"{server.base_url}/metrics/{{model}}", limits=FAST, clock=lambda: NOW)
        answer = batched.read_many(requests)
        assert len(server.requests) == 1
        apart = one_each.read_many(requests)
        assert len(server.requests) == 1 + count
    assert answer == apart  # the same readings from the multi-model document as from one document per model
    assert answer[models[-1]][ACTIVE].segments[""].requests == 100 * count


def test_http_json_batch_keeps_replica_restarts_per_model():
    with FleetJsonServer(["a", "b"]) as server:
        provider = HttpJsonProvider(f"{server.base_url}/metrics", limits=FAST, clock=lambda: NOW)
        provider.read_many([ReadRequest("a", (CANARY,), 60), ReadRequest("b", (CANARY,), 60)])
        server.models["b"]["versions"][CANARY]["replicas"]["r1"]["requests"] = 1  # b's replica restarted
        answer = provider.read_many([ReadRequest("a", (CANARY,), 60), ReadRequest("b", (CANARY,), 60)])
    assert "restarted" in answer["b"][CANARY].problems["*"]
    assert "*" not in answer["a"][CANARY].problems  # the same version of another model is not confused with it


@pytest.mark.e2e
def test_prometheus_batched_figures_equal_per_model_figures_on_a_real_prometheus(tmp_path):
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    models = [f"fleet-{i:02d}" for i in range(20)]
    exporters = []
    for i, model in enumerate(models):
        exporter = TrafficExporter(model, {
            ACTIVE: Traffic(rps=100 + i, error_rate=0.01, latency_ms=700),
            CANARY: Traffic(rps=10 + i, error_rate=0.02 + i / 1000, latency_ms=900)},
            segments={"eu": 0.3, "us": 0.7} if i % 4 == 0 else None)
        exporter.tick(60)  # fixed figures: no traffic while the test reads (the tick thread never fires)
        exporters.append(exporter.start(tick_seconds=3600))
    try:
        with prometheus_server([e.target for e in exporters], tmp_path / "prom", binary=binary) as prom:
            direct = PrometheusProvider(prom.url, limits=HttpLimits(timeout=5, deadline=20))
            expected = {m: exporters[i].totals[CANARY]["requests"] for i, m in enumerate(models)}
            deadline = time.monotonic() + 30
            while True:  # until Prometheus has scraped every exporter's figures
                seen = direct.read_many([ReadRequest(m, (CANARY,), 60) for m in models])
                ready = all(isinstance(a, dict) and CANARY in a and a[CANARY].segments[""].requests == expected[m]
                            for m, a in seen.items())
                if ready or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            assert ready, seen

            counted: list[str] = []

            def forward(request: Request) -> Reply:
                counted.append(request.query["query"][0])
                r = httpx.get(prom.url + request.path, params={k: v[0] for k, v in request.query.items()}, timeout=5)
                return Reply(r.status_code, r.content)

            with LocalServer(forward) as proxy:
                provider = PrometheusProvider(proxy.base_url, limits=HttpLimits(timeout=5, deadline=20))
                for count in (1, 5, 20):
                    requests = [ReadRequest(m, (ACTIVE, CANARY), 60) for m in models[:count]]
                    counted.clear()
                    batched = provider.read_many(requests)
                    assert len(counted) == len(DEFAULT_QUERIES), counted  # queries per cycle: 4 for 1, 5 or 20
                    for r in requests:
                        apart = provider.read(r.model, list(r.versions), r.since_seconds)
                        assert set(batched[r.model]) == set(apart) == {ACTIVE, CANARY}
                        for version in r.versions:
                            mine, theirs = batched[r.model][version], apart[version]
                            assert (mine.segments, mine.problems) == (theirs.segments, theirs.problems), r.model
                            assert mine.segments[""].latency_buckets and not mine.problems
                assert set(batched[models[0]][ACTIVE].segments) == {"", "eu", "us"}  # segments cut apart too
    finally:
        for exporter in exporters:
            exporter.stop()
