"""`modelctl watch` end to end: the real CLI, real git, real metrics servers on 127.0.0.1.

- a real Prometheus (one per module, 1 s scrapes) scraping prometheus_client exporters whose
  traffic runs in real time; each scenario has its own model, so scenarios never share series;
- the http-json provider against a real local HTTP server whose counters the test advances;
- hostile answers from a real server: no rollback, no crash, no traceback.

Timing: polls every 0.5 s; a regression (three times the error rate) must be rolled back within
30 s of its start, measured on the commit itself.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, git, repo_state, run_cli
from metrics_servers import (
    JsonMetricsServer,
    LiveJsonMetrics,
    LocalServer,
    Reply,
    Traffic,
    TrafficExporter,
    ensure_prometheus,
    free_port,
    prometheus_server,
)
from test_watch import set_deployment_of

from modelctl import ops, watch
from modelctl.registry import Registry

pytestmark = pytest.mark.e2e

ACTIVE, CANARY = "1.0.0", "1.0.1"


def configure(path: Path, sections: dict) -> None:
    """Deep-merge `sections` into the registry's modelctl.yaml (work tree only)."""
    import yaml

    config = path / "modelctl.yaml"
    doc = yaml.safe_load(config.read_text())

    def merge(base, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(doc, sections)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))


def make_registry(path: Path, name: str, write_bundle, config: dict | None = None, *,
                  canary_baseline: float = 0.01, percent: float = 10) -> Path:
    """A registry serving ACTIVE with CANARY at `percent` started now (and config tweaks committed)."""
    ops.init(path)
    (path / "prompts" / "p1.txt").write_text("You are helpful.\n")
    (path / "prompts" / "p2.txt").write_text("You are very helpful.\n")
    configure(path, config or {})
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "prompts and settings")
    reg = Registry(path)
    ops.register(reg, write_bundle(f"{name}-a.yaml", name=name, version=ACTIVE))
    ops.register(reg, write_bundle(f"{name}-b.yaml", name=name, version=CANARY, parent=ACTIVE, prompt="prompts/p2.txt",
                                   error_rate=canary_baseline))
    set_deployment_of(path, name, active=ACTIVE,
                      canary={"version": CANARY, "percent": percent, "started": watch.iso(time.time())},
                      versions={ACTIVE: "active", CANARY: "canary"})
    return path


def start_watch(registry: Path, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`modelctl watch NAME --json ARGS` as a real process."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "modelctl", "watch", name, "--json", *map(str, args)],
                            cwd=registry, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return proc.returncode, lines, err


def polls_of(lines: list[dict]) -> list[dict]:
    return [d for d in lines if d["event"] == "poll"]


def assert_rolled_back(registry: Path, name: str, regression_started: float, lines: list[dict],
                       metric: str = "error_rate") -> str:
    result = lines[-1]
    assert result["event"] == "result" and result["outcome"] == "rolled-back", result
    assert git(registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback {name} {CANARY}")
    committed = int(git(registry, "log", "-1", "--format=%ct"))
    assert committed - regression_started <= 30, f"rolled back {committed - regression_started:.0f}s after the regression"
    evidence = [e for e in git(registry, "log", "-1", "--format=%(trailers:key=Modelctl-Evidence,valueonly)").splitlines()
                if e.strip()]
    assert evidence and evidence[0].startswith(f"{metric} fail; canary="), evidence
    for part in ("(n=", "control=", "cusum_llr=", "intervals=", "alpha="):
        assert part in evidence[0], evidence[0]
    assert result["detect_to_commit_seconds"] < 10
    assert Registry(registry).deployment(name)["versions"][CANARY] == "rolled-back"
    return evidence[0]


# --------------------------------------------------------------------------- Prometheus

PROM_MODELS = ("healthy-agent", "regressed-agent", "segment-agent")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """One Prometheus for the module, scraping one exporter per scenario (real-time traffic, histograms)."""
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    exporters = {}
    for model in PROM_MODELS:
        segments = {"eu": 0.25, "us": 0.75} if model == "segment-agent" else None
        exporters[model] = TrafficExporter(model, {
            ACTIVE: Traffic(rps=1800, error_rate=0.01, latency_ms=800, cost_per_request=0.001),
            CANARY: Traffic(rps=200, error_rate=0.01, latency_ms=800, cost_per_request=0.001),
        }, segments=segments).start()
    try:
        with prometheus_server([e.target for e in exporters.values()], tmp_path_factory.mktemp("prom"),
                               binary=binary) as prom:
            yield prom, exporters
    finally:
        for exporter in exporters.values():
            exporter.stop()


def test_prometheus_healthy_canary_is_not_rolled_back(prometheus, tmp_path, write_bundle):
    prom, exporters = prometheus
    name = "healthy-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    before = repo_state(registry)
    proc = start_watch(registry, name, "--provider", "prometheus", "--url", prom.url, "--interval", "0.5s",
                       "--max-duration", "5s")
    code, lines, err = finish(proc)
    assert code == 0, err
    polls = polls_of(lines)
    assert len(polls) >= 5
    assert lines[-1]["outcome"] == "no-decision"
    assert all(p["action"] != "rollback" for p in polls)
    # real figures came through: the canary was judged on requests and on histogram buckets
    rate = [m for m in polls[-1]["metrics"] if m["metric"] == "error_rate" and not m["segment"]][0]
    latency = [m for m in polls[-1]["metrics"] if m["metric"] == "latency"][0]
    assert rate["verdict"] in ("pass", "inconclusive") and rate["canary_n"] > 200
    assert latency["verdict"] in ("pass", "inconclusive") and latency["threshold_ms"]
    assert repo_state(registry) == before


def test_prometheus_tripled_error_rate_is_rolled_back_within_30s(prometheus, tmp_path, write_bundle):
    prom, exporters = prometheus
    name = "regressed-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    regression_started = time.time()
    exporters[name].set_traffic(CANARY, error_rate=0.03)
    proc = start_watch(registry, name, "--provider", "prometheus", "--url", prom.url, "--interval", "0.5s",
                       "--max-duration", "40s")
    code, lines, err = finish(proc)
    assert code == 1, err
    assert_rolled_back(registry, name, regression_started, lines)
    assert "rolled back canary" in err and "Traceback" not in err


def test_prometheus_segment_regression_is_rolled_back_naming_the_segment(prometheus, tmp_path, write_bundle):
    prom, exporters = prometheus
    name = "segment-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    regression_started = time.time()
    exporters[name].segment_rates[(CANARY, "eu")] = 0.08  # a quarter of the traffic, 1 % -> 8 %
    proc = start_watch(registry, name, "--provider", "prometheus", "--url", prom.url, "--interval", "0.5s",
                       "--max-duration", "40s")
    code, lines, err = finish(proc)
    assert code == 1, (err, polls_of(lines)[-1]["metrics"] if polls_of(lines) else None)
    assert_rolled_back(registry, name, regression_started, lines, metric="error_rate[eu]")
    assert "segment eu" in lines[-1]["message"]


# --------------------------------------------------------------------------- http-json, live traffic

ADVANCE = {"canary": {"steps": [5, 10, 25, 50], "min_step_seconds": 1},
           "analysis": {"min_duration_seconds": 1, "min_events": 10}}


def live(name: str, canary_rate: float = 0.01, **kwargs) -> LiveJsonMetrics:
    return LiveJsonMetrics(name, {ACTIVE: Traffic(rps=4500, error_rate=0.01, latency_ms=800, cost_per_request=0.001),
                                  CANARY: Traffic(rps=500, error_rate=canary_rate, latency_ms=800,
                                                  cost_per_request=0.001)}, **kwargs)


def test_http_json_healthy_canary_is_not_rolled_back(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    before = repo_state(registry)
    with live(name) as server:
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "4s"))
    assert code == 0, err
    polls = polls_of(lines)
    assert len(polls) >= 4 and all(p["action"] != "rollback" for p in polls)
    assert polls[-1]["metrics"][0]["canary_n"] > 500
    assert repo_state(registry) == before


def test_http_json_tripled_error_rate_is_rolled_back_within_30s_and_replays_to_the_same_poll(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    record, page = tmp_path / "polls.jsonl", tmp_path / "watch.html"
    with live(name, canary_rate=0.03) as server:
        regression_started = time.time()
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "40s", "--record", record, "--report", page))
    assert code == 1, err
    evidence = assert_rolled_back(registry, name, regression_started, lines)
    decided = len(polls_of(lines))
    assert len(record.read_text().splitlines()) == decided
    assert "<svg" in page.read_text() and f"rollback at poll {decided}" in page.read_text()
    proc = run_cli("replay", record, "--json", cwd=registry)
    assert proc.returncode == 0, proc.stderr
    [canary] = json.loads(proc.stdout)["canaries"]
    assert (canary["action"], canary["poll"], canary["canary"]) == ("rollback", decided, CANARY)
    assert canary["evidence"][0] == evidence.split(" | ")[0]


def test_http_json_shared_blip_during_advance_is_not_a_rollback(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle, ADVANCE)
    with live(name).route(registry, name, 5000) as server:
        proc = start_watch(registry, name, "--url", server.url, "--interval", "0.5s", "--max-duration", "60s",
                           "--advance")
        # a provider incident hits both versions alike for two seconds, while watch is stepping
        blip = threading.Timer(2.0, lambda: [server.set_traffic(v, error_rate=0.25) for v in (ACTIVE, CANARY)])
        end = threading.Timer(4.0, lambda: [server.set_traffic(v, error_rate=0.01) for v in (ACTIVE, CANARY)])
        blip.start(), end.start()
        code, lines, err = finish(proc)
        blip.cancel(), end.cancel()
    assert code == 0, err
    assert all(p["action"] != "rollback" for p in polls_of(lines))
    assert lines[-1]["outcome"] == "promoted", lines[-1]
    assert [d["percent"] for d in lines if d["event"] == "step"] == [25, 50]
    assert "rollback" not in git(registry, "log", "--format=%s")


def test_http_json_a_candidate_registering_its_own_high_baseline_is_still_rolled_back(tmp_path, write_bundle):
    name = "support-agent"
    # the candidate's bundle says 2 % is normal for it; the bar comes from the live control (1 %)
    registry = make_registry(tmp_path / "reg", name, write_bundle, canary_baseline=0.02)
    with live(name, canary_rate=0.02) as server:
        started = time.time()
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "40s"))
    assert code == 1, err
    assert_rolled_back(registry, name, started, lines)


def test_http_json_a_restarted_control_replica_is_an_error_poll_never_a_rollback(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    before = repo_state(registry)
    with live(name, replicas=4) as server:
        proc = start_watch(registry, name, "--url", server.url, "--interval", "0.5s", "--max-duration", "6s")
        seen = polls_seen(proc, 3)
        server.restart(ACTIVE, "r2")
        code, lines, err = finish(proc)
    assert code == 0, err
    polls = polls_of(seen + lines)
    assert all(p["action"] != "rollback" for p in polls) and lines[-1]["outcome"] == "no-decision"
    errors = [m for p in polls for m in p["metrics"] if m["verdict"] == "error"]
    assert any("replica r2 restarted" in m["reason"] for m in errors), errors
    assert polls[-1]["metrics"][0]["verdict"] != "error"  # counting went on from the new values
    assert repo_state(registry) == before


def test_http_json_sample_ratio_mismatch_holds_and_never_rolls_back(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    before = repo_state(registry)
    # configured 10 %, served 2 %, and the canary looks bad: the comparison is invalid either way
    server = LiveJsonMetrics(name, {ACTIVE: Traffic(rps=4900, error_rate=0.01), CANARY: Traffic(rps=100, error_rate=0.05)})
    with server:
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "5s"))
    assert code == 0, err
    polls = polls_of(lines)
    assert polls[-1]["action"] == "srm-hold" and all(p["action"] != "rollback" for p in polls)
    assert any(d["event"] == "srm" and "configured 10%" in d["message"] for d in lines)
    assert repo_state(registry) == before


def test_http_json_segment_regression_is_rolled_back_naming_the_segment(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    server = live(name, segments={"eu": 0.1, "us": 0.9})
    server.segment_rates[(CANARY, "eu")] = 0.06
    with server:
        started = time.time()
        code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                              "--max-duration", "40s"))
    assert code == 1, err
    assert_rolled_back(registry, name, started, lines, metric="error_rate[eu]")
    assert "segment eu" in lines[-1]["message"]


def test_max_duration_is_a_hard_bound_against_a_slow_server(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle, {"metrics": {"timeout": 30, "deadline": 60}})
    with LocalServer(lambda request: Reply(200, {"model": name, "versions": {}}, delay=30)) as server:
        started = time.monotonic()
        code, lines, err = finish(start_watch(registry, name, "--url", f"{server.base_url}/metrics/{{model}}",
                                              "--interval", "1s", "--max-duration", "3s"))
        took = time.monotonic() - started
    assert code == 0, err
    assert lines[-1]["outcome"] == "no-decision"
    # process start and git reads on a busy machine, not 30 s of waiting for the server
    assert took < 3 + 10, f"a 3 s watch took {took:.1f}s"
    assert len(polls_of(lines)) == 1 and "within" in polls_of(lines)[0]["error"]


# --------------------------------------------------------------------------- hostile answers

HEALTHY = {"model": "support-agent", "versions": {ACTIVE: {"requests": 10_000, "errors": 100},
                                                  CANARY: {"requests": 1_000, "errors": 10}}}


def regressed(**canary) -> dict:
    """A document that, if believed, shows the canary failing badly since the healthy first answer."""
    entry = {"requests": 3_000, "errors": 1_000, "latency_p95_ms": 800, "cost_per_request": 0.001, **canary}
    return {"model": "support-agent", "versions": {ACTIVE: {"requests": 20_000, "errors": 200,
                                                            "latency_p95_ms": 800, "cost_per_request": 0.001},
                                                   CANARY: entry}}


# case -> (the answer, what the poll must say about it; None: the error_rate result says why)
HOSTILE = {
    "nan": (Reply(200, json.dumps(regressed(errors=float("nan")))), None),
    "inf": (Reply(200, json.dumps(regressed(requests=float("inf")))), None),
    "errors-over-requests": (Reply(200, regressed(errors=50_000)), None),
    "errors-reset-while-requests-rise": (Reply(200, regressed(errors=0)), None),
    "restarted-exporter": (Reply(200, regressed(requests=10, errors=0)), None),
    "empty": (Reply(200, b""), "invalid JSON"),
    "http-500-with-a-body": (Reply(500, regressed()), "HTTP 500"),
    "timeout": (Reply(200, regressed(), delay=3), "within"),
    "slow-drip": (Reply(200, regressed(), drip=0.05), "no complete answer within"),
    "huge-body": (Reply(200, json.dumps(regressed()) + " " * 2_000_000), "more than"),
    "broken-json": (Reply(200, b'{"model": "support-agent", "versions": {"1.0.1": {"requests": 30'), "invalid JSON"),
    "redirect-elsewhere": (Reply(302, b"", headers={"Location": "http://203.0.113.9/metrics/support-agent"}),
                           "another host"),
}

FAST_CONFIG = {"analysis": {"consecutive_errors": 50}, "metrics": {"timeout": 0.3, "deadline": 0.6}}


@pytest.fixture(scope="module")
def template_registry(tmp_path_factory):
    from conftest import bundle_text

    base = tmp_path_factory.mktemp("hostile")

    def write(filename, **fields):
        path = base / "in" / filename
        path.parent.mkdir(exist_ok=True)
        path.write_text(bundle_text(**fields))
        return path

    return make_registry(base / "template", "support-agent", write, FAST_CONFIG)


def test_hostile_answers_cause_no_rollback_no_crash_no_traceback(template_registry, tmp_path):
    """One real watch process meets every hostile answer in turn (an unreachable endpoint: next test)."""
    registry = tmp_path / "reg"
    shutil.copytree(template_registry, registry, symlinks=True)
    cases = list(HOSTILE.items())
    served = threading.Event()
    count = {"n": 0}
    lock = threading.Lock()

    def answer(request):
        with lock:
            n = count["n"]
            count["n"] += 1
        if n == 0:
            return Reply(200, HEALTHY)  # sound, so that later figures would count as increases
        if n >= len(cases):
            served.set()
        return cases[(n - 1) % len(cases)][1][0]

    with LocalServer(answer) as server:
        proc = start_watch(registry, "support-agent", "--url", f"{server.base_url}/metrics/{{model}}",
                           "--interval", "0.1s", "--max-duration", "60s")
        try:
            assert served.wait(60), "the watch stopped polling"
            # end the canary: the watch sees it at its next poll and stops (exit 0)
            set_deployment_of(registry, "support-agent", canary=None,
                              versions={ACTIVE: "active", CANARY: "deprecated"})
            code, lines, err = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    polls = [d for d in lines if d["event"] == "poll"]
    assert len(polls) >= len(cases) + 1
    assert all(p["action"] != "rollback" for p in polls)
    assert sum(p["metrics"][0]["verdict"] == "error" for p in polls[1:len(cases) + 1]) >= len(cases) - 2
    for poll, (case, (_, says)) in zip(polls[1:], cases):
        rate = poll["metrics"][0]
        assert rate["metric"] == "error_rate" and not rate["segment"]
        # never a pass, never a fail; right after an unusable answer there may be no start to count from
        assert rate["verdict"] in ("error", "insufficient_data"), (case, poll)
        assert rate["reason"], case
        if says is not None:
            assert says in poll["error"], (case, poll["error"])
    assert lines[-1]["outcome"] == "canary-ended"
    assert git(registry, "log", "-1", "--format=%s").strip() == "test: set deployment"
    assert "rollback" not in git(registry, "log", "--format=%s")


def test_endpoint_down_holds_with_one_line_and_exit_4(template_registry, tmp_path):
    registry = tmp_path / "reg"
    shutil.copytree(template_registry, registry, symlinks=True)
    text = (registry / "modelctl.yaml").read_text().replace("consecutive_errors: 50", "consecutive_errors: 3")
    (registry / "modelctl.yaml").write_text(text)
    git(registry, "commit", "-q", "-am", "fail-safe after 3 error polls")
    before = repo_state(registry)
    url = f"http://127.0.0.1:{free_port()}/metrics/{{model}}"
    code, lines, err = finish(start_watch(registry, "support-agent", "--url", url, "--interval", "0.2s"))
    assert code == 4
    assert err.startswith("error: no usable metrics for 3 polls in a row; holding") and err.count("\n") == 1
    assert "cannot connect" in err
    assert [d["event"] for d in lines if d["event"] != "header"] == ["poll"] * 3 + ["result"]
    assert lines[-1]["outcome"] == "held"
    assert repo_state(registry) == before


def test_watch_without_a_canary_says_so(template_registry, tmp_path):
    registry = tmp_path / "reg"
    shutil.copytree(template_registry, registry, symlinks=True)
    set_deployment_of(registry, "support-agent", canary=None, versions={ACTIVE: "active", CANARY: "registered"})
    proc = run_cli("watch", "support-agent", "--once", cwd=registry)
    assert proc.returncode == 0
    assert json.loads(proc.stdout.splitlines()[-1])["outcome"] == "nothing-to-watch"
    assert "no live canary or shadow" in proc.stderr


def test_watch_refuses_bad_flags_before_polling(template_registry):
    for args, message in ((["--interval", "soon"], "invalid interval"),
                          (["--max-duration", "0"], "invalid max duration"),
                          (["--provider", "graphite"], "unknown metrics provider"),
                          (["--url", "ftp://example.com/x"], "metrics url must be http")):
        proc = run_cli("watch", "support-agent", *args, cwd=template_registry)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1, proc.stderr


def test_once_from_cron_counts_from_the_first_run_and_resumes_the_judgement(template_registry, tmp_path):
    registry = tmp_path / "reg"
    shutil.copytree(template_registry, registry, symlinks=True)
    with JsonMetricsServer("support-agent") as server:
        server.traffic(ACTIVE, 50_000, 0.01)  # history before the first run is not the canary's
        server.traffic(CANARY, 5_000, 0.01)
        runs = []
        for _ in range(12):
            proc = run_cli("watch", "support-agent", "--once", "--url", server.url, cwd=registry)
            runs.append((proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr))
            if proc.returncode != 0:
                break
            server.traffic(ACTIVE, 9_000, 0.01)  # the traffic between two cron runs
            server.traffic(CANARY, 1_000, 0.05)
    first, last = runs[0], runs[-1]
    rate = lambda run: polls_of(run[1])[0]["metrics"][0]  # noqa: E731
    assert first[0] == 0 and rate(first)["verdict"] == "insufficient_data"
    assert rate(runs[1])["canary_n"] == 1_000  # one interval counted, nothing from before the first run
    assert rate(runs[2])["canary_n"] == 2_000  # the judgement carried over between processes
    assert last[0] == 1, last[2]
    assert last[1][-1]["outcome"] == "rolled-back"
    assert git(registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback support-agent {CANARY}")


def cron_runs(server, where) -> list[tuple[int, list[dict], str]]:
    """`watch --once` runs with traffic between them, each in the clone `where(i)` gives, until one acts."""
    server.traffic(ACTIVE, 50_000, 0.01)
    server.traffic(CANARY, 5_000, 0.01)
    runs = []
    for i in range(12):
        proc = run_cli("watch", "support-agent", "--once", "--push", "--url", server.url, cwd=where(i))
        runs.append((proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr))
        if proc.returncode != 0:
            break
        server.traffic(ACTIVE, 9_000, 0.01)
        server.traffic(CANARY, 1_000, 0.05)
    return runs


def test_once_in_a_fresh_clone_each_time_resumes_from_the_remote_and_acts_at_the_same_run(template_registry,
                                                                                           tmp_path):
    # what a CronJob without a volume or a scheduled CI job does: a brand-new clone every run
    from gitremote import bare_remote, clone

    def pushing(name):
        registry = tmp_path / name
        shutil.copytree(template_registry, registry, symlinks=True)
        return registry, bare_remote(registry, tmp_path / f"{name}.git")

    kept, _ = pushing("kept")
    with JsonMetricsServer("support-agent") as server:
        one_clone = cron_runs(server, lambda i: kept)
    _, url = pushing("fresh")
    with JsonMetricsServer("support-agent") as server:
        fresh = cron_runs(server, lambda i: clone(url, tmp_path / f"run{i}"))
    rate = lambda run: polls_of(run[1])[0]["metrics"][0]  # noqa: E731
    assert [r[0] for r in fresh] == [r[0] for r in one_clone], (fresh[-1][2], one_clone[-1][2])
    assert fresh[-1][0] == 1 and fresh[-1][1][-1]["outcome"] == "rolled-back", fresh[-1][2]
    assert [rate(r)["canary_n"] for r in fresh[1:3]] == [1_000, 2_000]  # carried over through the remote
    assert [rate(r)["statistic"] for r in fresh] == [rate(r)["statistic"] for r in one_clone]
    assert "note:" not in "".join(r[2] for r in fresh)
    last = clone(url, tmp_path / "after")
    assert git(last, "log", "-1", "--format=%s").startswith(f"modelctl: rollback support-agent {CANARY}")
    assert git(last, "ls-remote", "origin", "refs/modelctl/watch/*").strip().endswith("refs/modelctl/watch/support-agent/state")


def pushed_pair(template_registry, tmp_path):
    """The registry pushing to a bare remote, and a second clone of it (Bob's)."""
    from gitremote import bare_remote, clone

    registry = tmp_path / "first"
    shutil.copytree(template_registry, registry, symlinks=True)
    url = bare_remote(registry, tmp_path / "remote.git")
    return registry, clone(url, tmp_path / "second"), tmp_path / "remote.git"


BOB = {"GIT_AUTHOR_NAME": "Bob Oncall", "GIT_COMMITTER_NAME": "Bob Oncall"}


def test_two_watchers_on_two_clones_make_one_rollback_and_the_second_says_who(template_registry, tmp_path):
    registry, second, remote = pushed_pair(template_registry, tmp_path)
    with live("support-agent", canary_rate=0.05) as server:
        procs = [start_watch(registry, "support-agent", "--push", "--url", server.url, "--interval", "0.5s",
                             "--max-duration", "30s"),
                 start_watch(second, "support-agent", "--push", "--url", server.url, "--interval", "0.5s",
                             "--max-duration", "30s", env=BOB)]
        results = [finish(proc) for proc in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    outcomes = sorted(lines[-1]["outcome"] for _, lines, _ in results)
    # the second learns it from the remote at its next poll, or from the rollback's own re-check
    assert outcomes in (["already-rolled-back", "rolled-back"], ["canary-ended", "rolled-back"])
    winner = next(lines[-1] for _, lines, _ in results if lines[-1]["outcome"] == "rolled-back")
    loser_err = next(err for _, lines, err in results if lines[-1]["outcome"] != "rolled-back")
    assert winner["pushed"] is True
    subjects = git(remote, "log", "--format=%s").splitlines()
    assert sum(s.startswith("modelctl: rollback support-agent") for s in subjects) == 1
    author = git(remote, "log", "-1", "--format=%an").strip()
    assert author in loser_err and ("already rolled back" in loser_err or "ended elsewhere" in loser_err)


def test_a_canary_ended_elsewhere_ends_the_watch_naming_who(template_registry, tmp_path):
    registry, second, remote = pushed_pair(template_registry, tmp_path)
    with live("support-agent") as server:
        proc = start_watch(registry, "support-agent", "--push", "--url", server.url, "--interval", "0.3s",
                           "--max-duration", "60s")
        assert polls_seen(proc, 2)
        bob = run_cli("rollback", "support-agent", "--push", "--reason", "paged: pulling it", cwd=second, env=BOB)
        assert bob.returncode == 0, bob.stderr
        code, lines, err = finish(proc)
    assert code == 0, err
    assert lines[-1]["outcome"] == "canary-ended"
    assert f"canary {CANARY} of support-agent ended elsewhere: it is rolled-back now" in err
    assert "Bob Oncall" in err
    assert git(remote, "log", "-1", "--format=%an").strip() == "Bob Oncall"  # watch wrote nothing


def test_a_step_after_a_humans_change_exits_3_and_writes_nothing(template_registry, tmp_path):
    registry, second, remote = pushed_pair(template_registry, tmp_path)
    configure(registry, ADVANCE)
    git(registry, "commit", "-q", "-am", "advance quickly")
    git(registry, "push", "-q", "origin", "main")
    git(second, "pull", "-q")
    with live("support-agent") as server:
        # the watch stops itself just before the step's write (before its fetch of the remote tip)
        proc = start_watch(registry, "support-agent", "--push", "--advance", "--url", server.url,
                           "--interval", "0.3s", "--max-duration", "60s", env={"MODELCTL_FAULT": "before-fetch:stop"})
        out: list[str] = []
        drain = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # a full pipe would block it
        drain.start()
        try:
            assert stopped(proc, 60), "watch never tried to step"
            # meanwhile a person sets the canary back to 5 %
            human = run_cli("canary", "support-agent", CANARY, "--pct", "5", "--push", "--reason", "too fast",
                            cwd=second, env=BOB)
            assert human.returncode == 0, human.stderr
            after_human = git(remote, "for-each-ref")
            local = git(registry, "rev-parse", "HEAD")
            os.kill(proc.pid, signal.SIGCONT)
            code, err = proc.wait(timeout=60), proc.stderr.read()
            drain.join(timeout=10)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    assert code == 3, err
    assert json.loads(out[-1])["outcome"] == "canary-changed"
    assert err.startswith(f"error: the canary of support-agent changed underneath: it was {CANARY} at 10%, "
                          f"now canary {CANARY} at 5%; nothing was written") and err.count("\n") == 1, err
    assert "Bob Oncall" in err
    assert git(remote, "for-each-ref") == after_human and git(registry, "rev-parse", "HEAD") == local


def polls_seen(proc: subprocess.Popen, count: int) -> list[dict]:
    """Read the watch's JSON lines until `count` polls went by; the lines read (finish reads the rest)."""
    out: list[dict] = []
    while len(polls_of(out)) < count:
        line = proc.stdout.readline()
        assert line, "the watch ended early"
        out.append(json.loads(line))
    return out


def stopped(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the process stopped itself (SIGSTOP) within `timeout` seconds (waiting for a fact)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- notifications

HOOKS = {"notifications": {"timeout": 0.5, "deadline": 5, "retries": 1, "webhooks": [
    {"name": "audit", "url_env": "AUDIT_URL", "token_env": "AUDIT_TOKEN", "format": "json"},
    {"name": "chat", "url_env": "CHAT_URL", "format": "slack", "events": ["rollback"]},
    {"name": "broken", "url_env": "BROKEN_URL"}]}}


def test_a_rollback_is_posted_to_the_webhooks_and_a_failing_one_changes_nothing(tmp_path, write_bundle):
    from test_notify import Receiver

    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle, HOOKS)
    audit, chat, broken = Receiver(), Receiver(), Receiver(["500"] * 5)
    env = {"AUDIT_URL": audit.url, "AUDIT_TOKEN": "t0ken", "CHAT_URL": chat.url, "BROKEN_URL": broken.url}
    try:
        with live(name, canary_rate=0.03) as server:
            code, lines, err = finish(start_watch(registry, name, "--url", server.url, "--interval", "0.5s",
                                                  "--max-duration", "40s", env=env))
    finally:
        for r in (audit, chat, broken):
            r.close()
    assert code == 1, err
    head = git(registry, "rev-parse", "HEAD").strip()
    [posted] = audit.received
    doc = posted["body"]
    assert (doc["event"], doc["model"], doc["version"], doc["active"], doc["commit"]) == \
        ("rollback", name, CANARY, ACTIVE, head)
    assert posted["authorization"] == "Bearer t0ken"
    assert any(m["name"] == "error_rate" and m["verdict"] == "fail" for m in doc["metrics"])
    assert chat.received[0]["body"]["text"].startswith(f"modelctl rolled back {name} {CANARY}; {ACTIVE} serves")
    assert len(broken.received) == 2  # the first attempt and one retry, then it gives up
    assert "could not notify broken of the rollback of support-agent after 2 attempt(s)" in err
    assert "the decision stands" in err and broken.url not in err and audit.url not in err + json.dumps(lines)
    notified = [d["message"] for d in lines if d["event"] == "notify"]
    assert sorted(m.split(" of ")[0] for m in notified) == ["could not notify broken", "notified audit",
                                                             "notified chat"]
    assert lines[-1]["outcome"] == "rolled-back"


def test_a_webhook_whose_url_is_not_in_the_environment_is_refused_before_polling(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle, HOOKS)
    before = repo_state(registry)
    proc = run_cli("watch", name, "--once", "--url", "http://127.0.0.1:9/metrics", cwd=registry,
                   env={"AUDIT_URL": "http://127.0.0.1:9/hook", "AUDIT_TOKEN": "x"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: webhook 'chat': the environment variable CHAT_URL is not set")
    assert proc.stderr.count("\n") == 1 and repo_state(registry) == before


# --------------------------------------------------------------------------- its own metrics

def test_a_real_prometheus_scrapes_the_watchs_own_metrics_and_healthz_answers(tmp_path, write_bundle):
    import httpx

    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    port = free_port()
    with live(name) as server:
        proc = start_watch(registry, name, "--url", server.url, "--interval", "0.5s", "--max-duration", "60s",
                           "--metrics-port", f"127.0.0.1:{port}")
        try:
            with prometheus_server([f"127.0.0.1:{port}"], tmp_path / "prom", binary=binary) as prom:
                # waiting for a fact: Prometheus has scraped a poll's worth of figures
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    polls = prom.query('modelctl_watch_polls_total{model="support-agent"}')["data"]["result"]
                    if polls and float(polls[0]["value"][1]) >= 2:
                        break
                    time.sleep(0.2)
                percent = prom.query("modelctl_watch_canary_percent")["data"]["result"]
                verdicts = prom.query('modelctl_watch_verdict{model="support-agent",metric="error_rate"} == 1')
                last_ok = prom.query("modelctl_watch_last_successful_poll_timestamp_seconds")["data"]["result"]
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        finally:
            proc.send_signal(signal.SIGINT)
            code, _, err = finish(proc)
    assert polls and float(polls[0]["value"][1]) >= 2, err
    assert [(r["metric"]["version"], float(r["value"][1])) for r in percent] == [(CANARY, 10.0)]
    [verdict] = verdicts["data"]["result"]
    assert verdict["metric"]["verdict"] in ("pass", "inconclusive", "insufficient_data")
    assert last_ok and abs(float(last_ok[0]["value"][1]) - time.time()) < 60
    assert health.status_code == 200 and health.text.startswith("ok: last cycle")
    assert code in (0, 130), err


def test_a_bad_or_busy_metrics_port_is_refused_before_polling(tmp_path, write_bundle):
    import socket

    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    before = repo_state(registry)
    proc = run_cli("watch", name, "--once", "--metrics-port", "99999", cwd=registry)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --metrics-port: '99999' is not a port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = run_cli("watch", name, "--once", "--metrics-port", f"127.0.0.1:{taken}", cwd=registry)
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{taken}" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and repo_state(registry) == before


# --------------------------------------------------------------------------- watch --all

def add_model(path: Path, name: str, write_bundle, percent: float = 10) -> None:
    """Register ACTIVE and CANARY of another model in the registry and start its canary."""
    reg = Registry(path)
    ops.register(reg, write_bundle(f"{name}-a.yaml", name=name, version=ACTIVE))
    ops.register(reg, write_bundle(f"{name}-b.yaml", name=name, version=CANARY, parent=ACTIVE, prompt="prompts/p2.txt"))
    set_deployment_of(path, name, active=ACTIVE,
                      canary={"version": CANARY, "percent": percent, "started": watch.iso(time.time())},
                      versions={ACTIVE: "active", CANARY: "canary"})


def test_watch_all_rolls_back_the_regressed_canary_and_leaves_the_healthy_and_the_silent_ones(tmp_path, write_bundle):
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    healthy = Traffic(rps=500, error_rate=0.01, latency_ms=800, cost_per_request=0.001)
    exporters = {
        "calm-agent": TrafficExporter("calm-agent", {ACTIVE: Traffic(rps=4500, error_rate=0.01, latency_ms=800,
                                                                     cost_per_request=0.001), CANARY: healthy}),
        "bad-agent": TrafficExporter("bad-agent", {ACTIVE: Traffic(rps=4500, error_rate=0.01, latency_ms=800,
                                                                   cost_per_request=0.001),
                                                   CANARY: Traffic(rps=500, error_rate=0.04, latency_ms=800,
                                                                   cost_per_request=0.001)}),
    }
    registry = make_registry(tmp_path / "reg", "calm-agent", write_bundle)
    add_model(registry, "bad-agent", write_bundle)
    add_model(registry, "ghost-agent", write_bundle)  # a live canary whose metrics never arrive
    for e in exporters.values():
        e.start()
    try:
        with prometheus_server([e.target for e in exporters.values()], tmp_path / "prom", binary=binary) as prom:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelctl", "watch", "--all", "--json", "--provider", "prometheus", "--url",
                 prom.url, "--interval", "0.5s", "--max-duration", "25s"],
                cwd=registry, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            code, lines, err = finish(proc)
    finally:
        for e in exporters.values():
            e.stop()
    assert code == 1, err
    assert "Traceback" not in err
    polled = {d["model"] for d in polls_of(lines)}
    assert polled == {"calm-agent", "bad-agent", "ghost-agent"}
    results = [d for d in lines if d["event"] == "result"]
    assert [(r["model"], r["outcome"]) for r in results] == [("bad-agent", "rolled-back")]
    reg = Registry(registry)
    assert reg.deployment("bad-agent")["versions"][CANARY] == "rolled-back"
    assert reg.deployment("calm-agent")["canary"]["version"] == CANARY
    assert reg.deployment("ghost-agent")["canary"]["version"] == CANARY
    ghost = [d for d in polls_of(lines) if d["model"] == "ghost-agent"]
    assert all(d["action"] != "rollback" for d in ghost)
    assert git(registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback bad-agent {CANARY}")


@pytest.mark.parametrize(("args", "message"), [([], "missing model NAME (or --all)"),
                                               (["support-agent", "--all"], "give a model NAME or --all, not both"),
                                               (["--all", "--record", "x.jsonl"], "--record and --report follow one")])
def test_watch_needs_exactly_one_of_a_name_and_all(template_registry, args, message):
    before = repo_state(template_registry)
    proc = run_cli("watch", *args, cwd=template_registry)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert repo_state(template_registry) == before


def test_two_replicas_make_one_rollback_and_only_the_winner_notifies(tmp_path, write_bundle):
    from gitremote import bare_remote, clone
    from test_notify import Receiver

    name = "support-agent"
    hooks = {"notifications": {"timeout": 1, "deadline": 5, "retries": 1,
                               "webhooks": [{"name": "audit", "url_env": "AUDIT_URL"}]}}
    first = make_registry(tmp_path / "first", name, write_bundle, hooks)
    url = bare_remote(first, tmp_path / "remote.git")
    second = clone(url, tmp_path / "second")
    audit = Receiver()
    env = {"AUDIT_URL": audit.url}
    try:
        with live(name, canary_rate=0.05) as server:
            procs = [start_watch(path, name, "--push", "--url", server.url, "--interval", "0.5s",
                                 "--max-duration", "30s", env={**env, **extra})
                     for path, extra in ((first, {}), (second, BOB))]
            results = [finish(proc) for proc in procs]
    finally:
        audit.close()
    assert sorted(code for code, _, _ in results) == [0, 1], results
    rollbacks = [c for c in git(tmp_path / "remote.git", "log", "--format=%H %s").splitlines()
                 if " modelctl: rollback support-agent" in c]
    assert len(rollbacks) == 1
    assert [r["body"]["event"] for r in audit.received] == ["rollback"]  # the loser stays quiet
    assert audit.received[0]["body"]["commit"] == rollbacks[0].split()[0]
