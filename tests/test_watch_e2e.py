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
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, git, repo_state, run_cli
from metrics_servers import (JsonMetricsServer, LocalServer, Reply, Traffic, TrafficExporter, ensure_prometheus,
                             free_port, prometheus_server)
from modelctl import ops, watch
from modelctl.registry import Registry
from test_watch import set_deployment_of

pytestmark = pytest.mark.e2e

ACTIVE, CANARY = "1.0.0", "1.0.1"

def make_registry(path: Path, name: str, write_bundle, config_edits: dict[str, str] | None = None) -> Path:
    """A registry serving ACTIVE with CANARY at 10 % started now (and config tweaks committed)."""
    ops.init(path)
    (path / "prompts" / "p1.txt").write_text("You are helpful.\n")
    (path / "prompts" / "p2.txt").write_text("You are very helpful.\n")
    config = path / "modelctl.yaml"
    text = config.read_text()
    for old, new in (config_edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "prompts and settings")
    reg = Registry(path)
    ops.register(reg, write_bundle(f"{name}-a.yaml", name=name, version=ACTIVE))
    ops.register(reg, write_bundle(f"{name}-b.yaml", name=name, version=CANARY, parent=ACTIVE, prompt="prompts/p2.txt"))
    set_deployment_of(path, name, active=ACTIVE,
                      canary={"version": CANARY, "percent": 10, "started": watch.iso(time.time())},
                      versions={ACTIVE: "active", CANARY: "canary"})
    return path


def start_watch(registry: Path, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`modelctl watch NAME --json ARGS` as a real process."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "modelctl", "watch", name, "--json", *args], cwd=registry,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list[dict], str]:
    out, err = proc.communicate(timeout=timeout)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return proc.returncode, lines, err


def assert_rolled_back(registry: Path, name: str, regression_started: float, lines: list[dict]) -> None:
    result = lines[-1]
    assert result["event"] == "result" and result["outcome"] == "rolled-back", result
    assert git(registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback {name} {CANARY}")
    committed = int(git(registry, "log", "-1", "--format=%ct"))
    assert committed - regression_started <= 30, f"rolled back {committed - regression_started:.0f}s after the regression"
    evidence = [e for e in git(registry, "log", "-1", "--format=%(trailers:key=Modelctl-Evidence,valueonly)").splitlines()
                if e.strip()]
    assert evidence and evidence[0].startswith("error_rate fail; canary=")
    for part in ("(n=", "baseline=", "threshold=", "sprt_llr=", "polls="):
        assert part in evidence[0], evidence[0]
    assert result["detect_to_commit_seconds"] < 10
    assert Registry(registry).deployment(name)["versions"][CANARY] == "rolled-back"


# --------------------------------------------------------------------------- Prometheus

PROM_MODELS = ("healthy-agent", "regressed-agent")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """One Prometheus for the module, scraping one exporter per scenario (real-time traffic)."""
    binary = ensure_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here")
    exporters = {}
    for model in PROM_MODELS:
        exporters[model] = TrafficExporter(model, {
            ACTIVE: Traffic(rps=800, error_rate=0.01, latency_ms=800, cost_per_request=0.001),
            CANARY: Traffic(rps=200, error_rate=0.01, latency_ms=800, cost_per_request=0.001),
        }).start()
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
    polls = [d for d in lines if d["event"] == "poll"]
    assert len(polls) >= 5
    assert lines[-1]["outcome"] == "no-decision"
    assert all(p["action"] != "rollback" for p in polls)
    # real figures came through: the canary was judged on requests, not on errors
    judged = [p for p in polls if p["metrics"][0]["verdict"] in ("pass", "inconclusive")]
    assert judged and judged[-1]["metrics"][0]["canary_n"] > 200
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


# --------------------------------------------------------------------------- http-json


class DrivenTraffic:
    """The test's traffic for a JsonMetricsServer, every 0.1 s of real time."""

    def __init__(self, server: JsonMetricsServer, rates: dict[str, float], rps: dict[str, int]):
        self.server = server
        self.rates = rates
        self.rps = rps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        for version in self.rates:
            self.server.set(version, latency_p95_ms=820.0, cost_per_request=0.001)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.1):
            for version, rate in self.rates.items():
                self.server.traffic(version, self.rps[version] // 10, rate)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def test_http_json_healthy_canary_is_not_rolled_back(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    before = repo_state(registry)
    with JsonMetricsServer(name) as server, \
            DrivenTraffic(server, {ACTIVE: 0.01, CANARY: 0.01}, {ACTIVE: 1800, CANARY: 200}):
        proc = start_watch(registry, name, "--url", server.url, "--interval", "0.5s", "--max-duration", "4s")
        code, lines, err = finish(proc)
    assert code == 0, err
    polls = [d for d in lines if d["event"] == "poll"]
    assert len(polls) >= 4 and all(p["action"] != "rollback" for p in polls)
    assert polls[-1]["metrics"][0]["canary_n"] > 500
    assert repo_state(registry) == before


def test_http_json_tripled_error_rate_is_rolled_back_within_30s(tmp_path, write_bundle):
    name = "support-agent"
    registry = make_registry(tmp_path / "reg", name, write_bundle)
    with JsonMetricsServer(name) as server, \
            DrivenTraffic(server, {ACTIVE: 0.01, CANARY: 0.03}, {ACTIVE: 4500, CANARY: 500}):
        regression_started = time.time()
        proc = start_watch(registry, name, "--url", server.url, "--interval", "0.5s", "--max-duration", "40s")
        code, lines, err = finish(proc)
    assert code == 1, err
    assert_rolled_back(registry, name, regression_started, lines)


# --------------------------------------------------------------------------- hostile answers

HEALTHY = {"model": "support-agent", "versions": {ACTIVE: {"requests": 10_000, "errors": 100},
                                                  CANARY: {"requests": 1_000, "errors": 10}}}


def regressed(**canary) -> dict:
    """A document that, if believed, shows the canary failing badly since the healthy first answer."""
    entry = {"requests": 3_000, "errors": 1_000, "latency_p95_ms": 800, "cost_per_request": 0.001, **canary}
    return {"model": "support-agent", "versions": {ACTIVE: {"requests": 20_000, "errors": 200,
                                                            "latency_p95_ms": 800, "cost_per_request": 0.001},
                                                   CANARY: entry}}


# case -> (the answer, what the poll must say about it)
HOSTILE = {
    "nan": (Reply(200, json.dumps(regressed(errors=float("nan")))), "errors: nan"),
    "inf": (Reply(200, json.dumps(regressed(requests=float("inf")))), "requests: inf"),
    "errors-over-requests": (Reply(200, regressed(errors=50_000)), "exceed requests"),
    "empty": (Reply(200, b""), "invalid JSON"),
    "http-500-with-a-body": (Reply(500, regressed()), "HTTP 500"),
    "timeout": (Reply(200, regressed(), delay=3), "within"),
    "slow-drip": (Reply(200, regressed(), drip=0.05), "no complete answer within"),
    "huge-body": (Reply(200, json.dumps(regressed()) + " " * 2_000_000), "more than"),
    "broken-json": (Reply(200, b'{"model": "support-agent", "versions": {"1.0.1": {"requests": 30'), "invalid JSON"),
    "redirect-elsewhere": (Reply(302, b"", headers={"Location": "http://203.0.113.9/metrics/support-agent"}),
                           "another host"),
}

FAST_CONFIG = {
    "  consecutive_failures: 2 ": "  consecutive_failures: 1 ",  # one misread poll would roll back
    "  consecutive_errors: 5 ": "  consecutive_errors: 50 ",
    "  timeout: 5 ": "  timeout: 0.3\n  deadline: 0.6 ",
}


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
    for poll, (case, (_, says)) in zip(polls[1:], cases):
        rate = poll["metrics"][0]
        assert rate["verdict"] == "error", (case, poll)  # never a pass, never a fail
        assert says in (poll["error"] or rate["reason"]), (case, poll["error"], rate["reason"])
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
    assert [d["event"] for d in lines] == ["poll"] * 3 + ["result"]
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


def test_once_from_cron_counts_from_the_first_run_and_rolls_back_on_the_second_failure(template_registry, tmp_path):
    registry = tmp_path / "reg"
    shutil.copytree(template_registry, registry, symlinks=True)
    text = (registry / "modelctl.yaml").read_text().replace("consecutive_failures: 1", "consecutive_failures: 2")
    (registry / "modelctl.yaml").write_text(text)
    git(registry, "commit", "-q", "-am", "two failing polls before acting")
    with JsonMetricsServer("support-agent") as server:
        for version in (ACTIVE, CANARY):
            server.set(version, latency_p95_ms=820.0, cost_per_request=0.001)
        server.traffic(ACTIVE, 50_000, 0.01)  # history before the first run is not the canary's
        server.traffic(CANARY, 5_000, 0.01)
        runs = []
        for _ in range(3):
            proc = run_cli("watch", "support-agent", "--once", "--url", server.url, cwd=registry)
            runs.append((proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr))
            server.traffic(ACTIVE, 18_000, 0.01)  # the traffic between two cron runs
            server.traffic(CANARY, 2_000, 0.05)
    first, second, third = runs
    assert first[0] == 0 and first[1][0]["metrics"][0]["canary_n"] == 0
    assert second[0] == 0 and second[1][0]["metrics"][0]["verdict"] == "fail"
    assert second[1][0]["metrics"][0]["canary_n"] == 2_000
    assert second[1][-1]["outcome"] == "no-decision"
    assert third[0] == 1, third[2]
    assert third[1][0]["metrics"][0]["canary_n"] == 4_000 and third[1][-1]["outcome"] == "rolled-back"
    assert git(registry, "log", "-1", "--format=%s").startswith(f"modelctl: rollback support-agent {CANARY}")


def test_two_watchers_on_two_clones_make_one_rollback_and_the_second_says_who(template_registry, tmp_path):
    from gitremote import bare_remote, clone

    registry = tmp_path / "first"
    shutil.copytree(template_registry, registry, symlinks=True)
    text = (registry / "modelctl.yaml").read_text().replace("consecutive_failures: 1", "consecutive_failures: 2")
    (registry / "modelctl.yaml").write_text(text)
    git(registry, "commit", "-q", "-am", "two failing polls before acting")
    url = bare_remote(registry, tmp_path / "remote.git")
    second = clone(url, tmp_path / "second")
    with JsonMetricsServer("support-agent") as server, \
            DrivenTraffic(server, {ACTIVE: 0.01, CANARY: 0.05}, {ACTIVE: 4500, CANARY: 500}):
        procs = [start_watch(registry, "support-agent", "--push", "--url", server.url, "--interval", "0.5s",
                             "--max-duration", "30s"),
                 start_watch(second, "support-agent", "--push", "--url", server.url, "--interval", "0.5s",
                             "--max-duration", "30s",
                             env={"GIT_AUTHOR_NAME": "Bob Oncall", "GIT_COMMITTER_NAME": "Bob Oncall"})]
        results = [finish(proc) for proc in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    outcomes = sorted(lines[-1]["outcome"] for _, lines, _ in results)
    assert outcomes == ["already-rolled-back", "rolled-back"]
    winner = next(lines[-1] for _, lines, _ in results if lines[-1]["outcome"] == "rolled-back")
    loser_err = next(err for _, lines, err in results if lines[-1]["outcome"] == "already-rolled-back")
    assert winner["pushed"] is True
    remote = tmp_path / "remote.git"
    subjects = git(remote, "log", "--format=%s").splitlines()
    assert sum(s.startswith("modelctl: rollback support-agent") for s in subjects) == 1
    author = git(remote, "log", "-1", "--format=%an").strip()
    assert "already rolled back" in loser_err and author in loser_err
