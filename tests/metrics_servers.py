"""Real metrics servers for tests, all on 127.0.0.1: no mocks, no sleeping to pass.

- `LocalServer(handler)`: an HTTP server in a thread whose answers a test scripts with `Reply`
  (status, body, headers, a delay before answering, a slow drip); it records every `Request`.
- `JsonMetricsServer(model)`: the http-json format of DESIGN §5; the test drives the traffic
  (`add`, `traffic`, `set`) and can make it hostile (`misbehave(Reply(...))`).
- `LiveJsonMetrics(model, versions)`: the http-json format with everything it can carry (histogram
  buckets, cost_total, segments, replicas), its traffic computed from the real time elapsed when a
  request arrives (no thread, no randomness); `route()` splits traffic as the registry says,
  `restart()` restarts one replica, `set_traffic()` changes a version from now on.
- `TrafficExporter()`: a prometheus_client exporter of llm_requests_total, llm_errors_total,
  llm_cost_total and the llm_latency_ms histogram (labels model, version); `tick(seconds)` adds
  simulated traffic deterministically, `start()` runs a thread that ticks in real time.
- `prometheus_server(targets, workdir)`: a real Prometheus (1 s scrapes, its own storage, a free
  port) scraping the given targets, ready once every target is up. `ensure_prometheus()` finds
  (or apt-installs) the binary and returns None when it cannot.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

# --------------------------------------------------------------------------- generic server


@dataclass
class Request:
    """What the server saw."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class Reply:
    """What the server answers. `delay` waits before the headers; `drip` sends the body byte by byte."""

    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float | None = None  # seconds between body bytes
    length: int | None = None  # Content-Length to declare (default: the body's; -1: none, close to end)

    def payload(self) -> bytes:
        """The body as bytes (dicts and lists as JSON; NaN/Infinity allowed, as hostile servers do)."""
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode()
        if isinstance(self.body, str):
            return self.body.encode()
        return self.body


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        parts = urlsplit(self.path)
        request = Request("GET", parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(request)
        try:
            reply = owner.handler(request)
        except Exception as exc:  # a broken test handler should show up as a 500, not a hang
            reply = Reply(500, f"handler failed: {exc}")
        stopping = owner.stopping
        if reply.delay and stopping.wait(reply.delay):
            return
        body = reply.payload()
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            if reply.length == -1:
                headers["Connection"] = "close"
                self.close_connection = True
            else:
                headers.setdefault("Content-Length", str(reply.length if reply.length is not None else len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if reply.drip is None:
                self.wfile.write(body)
            else:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    if stopping.wait(reply.drip):
                        return
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should on hostile answers

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalServer


class LocalServer:
    """An HTTP server on 127.0.0.1 in a thread; `handler(Request) -> Reply` decides every answer."""

    def __init__(self, handler: Callable[[Request], Reply] | None = None):
        self.handler = handler or (lambda request: Reply(404, b"{}"))
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalServer:
        """Bind a free port and serve in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end slow answers in progress."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --------------------------------------------------------------------------- http-json


class JsonMetricsServer(LocalServer):
    """Serves `GET /metrics/<model>` in the http-json format; the test advances the counters."""

    def __init__(self, model: str = "support-agent"):
        super().__init__(self._answer)
        self.model = model
        self.versions: dict[str, dict[str, float]] = {}
        self.timestamp: float | None = None  # included in answers when set
        self._carry: dict[str, float] = {}
        self._hostile: Reply | Callable[[Request], Reply] | None = None

    @property
    def url(self) -> str:
        """The URL template for metrics.url (with `{model}`)."""
        return f"{self.base_url}/metrics/{{model}}"

    def add(self, version: str, requests: float = 0, errors: float = 0, **counters: float) -> None:
        """Advance a version's cumulative counters."""
        with self.lock:
            entry = self.versions.setdefault(version, {"requests": 0, "errors": 0})
            entry["requests"] += requests
            entry["errors"] += errors
            for key, value in counters.items():
                entry[key] = entry.get(key, 0) + value

    def traffic(self, version: str, requests: int, error_rate: float) -> None:
        """Serve `requests` more requests at `error_rate` (errors spread evenly, no randomness)."""
        carry = self._carry.get(version, 0.0) + requests * error_rate
        errors = math.floor(carry + 1e-9)
        self._carry[version] = carry - errors
        self.add(version, requests=requests, errors=errors)

    def set(self, version: str, **gauges: float) -> None:
        """Set gauges (latency_p95_ms, cost_per_request, ...) of a version."""
        with self.lock:
            self.versions.setdefault(version, {"requests": 0, "errors": 0}).update(gauges)

    def misbehave(self, reply: Reply | Callable[[Request], Reply] | None) -> None:
        """Answer every request with `reply` (or a function of the request) until called with None."""
        self._hostile = reply

    def document(self) -> dict:
        """The JSON document a GET returns now."""
        with self.lock:
            doc = {"model": self.model, "versions": {v: dict(c) for v, c in self.versions.items()}}
        if self.timestamp is not None:
            doc["timestamp"] = self.timestamp
        return doc

    def _answer(self, request: Request) -> Reply:
        hostile = self._hostile
        if hostile is not None:
            return hostile(request) if callable(hostile) else hostile
        if request.path != f"/metrics/{self.model}":
            return Reply(404, {"error": "no such model"})
        return Reply(200, self.document())


# --------------------------------------------------------------------------- live http-json


class LiveJsonMetrics(LocalServer):
    """`GET /metrics/<model>` answering live simulated traffic in the full http-json format."""

    def __init__(self, model: str, versions: dict[str, Traffic], *, segments: dict[str, float] | None = None,
                 replicas: int = 1, clock: Callable[[], float] = time.monotonic):
        super().__init__(self._answer)
        self.model = model
        self.traffic = {v: Traffic(**vars(t)) for v, t in versions.items()}
        self.segments = segments or {"": 1.0}
        self.replicas = [f"r{i + 1}" for i in range(replicas)]
        self.segment_rates: dict[tuple[str, str], float] = {}  # (version, segment) -> error rate
        self.clock = clock
        self.counts: dict[tuple[str, str, str], dict] = {}  # (version, segment, replica) -> counters
        self._carry: dict[tuple[str, str, str], list[float]] = {}
        self._last = clock()
        self._router: tuple | None = None
        self._route_checked = -1.0

    @property
    def url(self) -> str:
        return f"{self.base_url}/metrics/{{model}}"

    def route(self, registry, name: str, total_rps: float) -> LiveJsonMetrics:
        """From now on split `total_rps` between the active version and the canary as the registry says."""
        self._router = (registry, name, total_rps)
        return self

    def set_traffic(self, version: str, **changes) -> None:
        """Change a version's rps, error_rate, latency_ms or cost_per_request from now on."""
        with self.lock:
            self._advance()
            for key, value in changes.items():
                setattr(self.traffic.setdefault(version, Traffic()), key, value)

    def restart(self, version: str, replica: str) -> None:
        """That replica of the version starts counting from zero again."""
        with self.lock:
            self._advance()
            for key in [k for k in self.counts if k[0] == version and k[2] == replica]:
                self.counts[key] = _zero()

    def _follow_router(self) -> None:
        if self._router is None or self.clock() - self._route_checked < 0.3:
            return
        self._route_checked = self.clock()
        registry, name, total = self._router
        import yaml

        text = subprocess.run(["git", "show", f"HEAD:deployments/{name}.yaml"], cwd=registry, capture_output=True,
                              text=True).stdout
        dep = yaml.safe_load(text) or {}
        share = ((dep.get("canary") or {}).get("percent") or 0) / 100
        if dep.get("active") in self.traffic:
            self.traffic[dep["active"]].rps = total * (1 - share)
        if dep.get("canary") and dep["canary"]["version"] in self.traffic:
            self.traffic[dep["canary"]["version"]].rps = total * share

    def _advance(self) -> None:
        now = self.clock()
        dt, self._last = max(0.0, now - self._last), now
        for version, t in self.traffic.items():
            for seg, share in self.segments.items():
                rate = self.segment_rates.get((version, seg), t.error_rate)
                for replica in self.replicas:
                    key = (version, seg, replica)
                    c = self.counts.setdefault(key, _zero())
                    carry = self._carry.setdefault(key, [0.0, 0.0])
                    carry[0] += t.rps * share / len(self.replicas) * dt
                    n = math.floor(carry[0])
                    carry[0] -= n
                    carry[1] += n * rate
                    e = math.floor(carry[1] + 1e-9)
                    carry[1] -= e
                    c["requests"] += n
                    c["errors"] += e
                    c["cost_total"] += n * t.cost_per_request
                    for i, bound in enumerate(LATENCY_BUCKETS + (math.inf,)):
                        # latencies spread evenly over +-20 % of latency_ms
                        lo, hi = t.latency_ms * 0.8, t.latency_ms * 1.2
                        c["buckets"][i] += round(n * min(1.0, max(0.0, (bound - lo) / (hi - lo))))

    def _entry(self, version: str, replica: str | None) -> dict:
        keys = [k for k in self.counts if k[0] == version and (replica is None or k[2] == replica)]

        def total(ks):
            out = _zero()
            for k in ks:
                for name in ("requests", "errors", "cost_total"):
                    out[name] += self.counts[k][name]
                out["buckets"] = [a + b for a, b in zip(out["buckets"], self.counts[k]["buckets"])]
            return {"requests": out["requests"], "errors": out["errors"], "cost_total": round(out["cost_total"], 9),
                    "latency_bucket": {("+Inf" if math.isinf(b) else f"{b:g}"): c
                                       for b, c in zip(LATENCY_BUCKETS + (math.inf,), out["buckets"])}}

        entry = total(keys)
        named = [seg for seg in self.segments if seg]
        if named:
            entry["segments"] = {seg: total([k for k in keys if k[1] == seg]) for seg in named}
        return entry

    def document(self) -> dict:
        """The JSON document a GET returns now."""
        with self.lock:
            self._follow_router()
            self._advance()
            versions = {}
            for version, t in self.traffic.items():
                if len(self.replicas) == 1:
                    entry = self._entry(version, None)
                else:
                    entry = {"replicas": {r: self._entry(version, r) for r in self.replicas}}
                entry["latency_p95_ms"] = t.latency_ms * 1.18
                versions[version] = entry
        return {"model": self.model, "timestamp": time.time(), "versions": versions}

    def _answer(self, request: Request) -> Reply:
        if request.path != f"/metrics/{self.model}":
            return Reply(404, {"error": "no such model"})
        return Reply(200, self.document())


def _zero() -> dict:
    return {"requests": 0, "errors": 0, "cost_total": 0.0, "buckets": [0] * (len(LATENCY_BUCKETS) + 1)}


# --------------------------------------------------------------------------- Prometheus exporter


@dataclass
class Traffic:
    """Simulated traffic of one version."""

    rps: float = 20.0
    error_rate: float = 0.01
    latency_ms: float = 800.0
    cost_per_request: float = 0.001


LATENCY_BUCKETS = (100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1500, 2000, 3000, 5000)


class TrafficExporter:
    """A prometheus_client exporter on 127.0.0.1 simulating LLM traffic for several versions."""

    def __init__(self, model: str = "support-agent", versions: dict[str, Traffic] | None = None,
                 segments: dict[str, float] | None = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.model = model
        self.traffic = dict(versions or {})
        self.segments = segments or {"": 1.0}  # segment label value -> share ("" = no label)
        self.segment_rates: dict[tuple[str, str], float] = {}  # (version, segment) -> error rate
        self.registry = CollectorRegistry()
        labels = ("model", "version", "segment")
        self.requests = Counter("llm_requests", "LLM requests", labels, registry=self.registry)
        self.errors = Counter("llm_errors", "LLM failed requests", labels, registry=self.registry)
        self.cost = Counter("llm_cost", "LLM cost in USD", labels, registry=self.registry)
        self.latency = Histogram("llm_latency_ms", "LLM latency in ms", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.totals: dict[str, dict[str, float]] = {}
        self._carry: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = None
        self._thread: threading.Thread | None = None
        for version in self.traffic:
            self._touch(version)

    def _touch(self, version: str) -> None:
        # create the series at zero so Prometheus sees them from the first scrape
        for metric in (self.requests, self.errors, self.cost, self.latency):
            for seg in self.segments:
                metric.labels(self.model, version, seg)
        self.totals.setdefault(version, {"requests": 0, "errors": 0, "cost": 0.0})

    def set_traffic(self, version: str, **changes: float) -> None:
        """Change a version's rps, error_rate, latency_ms or cost_per_request from now on."""
        with self._lock:
            current = self.traffic.setdefault(version, Traffic())
            for key, value in changes.items():
                setattr(current, key, value)
            self._touch(version)

    def tick(self, seconds: float) -> None:
        """Add `seconds` worth of traffic (whole requests; errors spread evenly)."""
        with self._lock:
            for version, t in self.traffic.items():
                for seg, share in self.segments.items():
                    key = f"{version}|{seg}"
                    req_carry, err_carry = self._carry.get(key, (0.0, 0.0))
                    req_carry += t.rps * share * seconds
                    n = math.floor(req_carry)
                    req_carry -= n
                    err_carry += n * self.segment_rates.get((version, seg), t.error_rate)
                    e = math.floor(err_carry + 1e-9)
                    err_carry -= e
                    self._carry[key] = (req_carry, err_carry)
                    if n == 0:
                        continue
                    labels = (self.model, version, seg)
                    self.requests.labels(*labels).inc(n)
                    self.errors.labels(*labels).inc(e)
                    self.cost.labels(*labels).inc(n * t.cost_per_request)
                    for i in range(n):
                        # a spread of +-10 % around the configured latency, deterministic
                        self.latency.labels(*labels).observe(t.latency_ms * (0.9 + 0.2 * ((i * 37) % 100) / 100))
                    totals = self.totals[version]
                    totals["requests"] += n
                    totals["errors"] += e
                    totals["cost"] += n * t.cost_per_request

    def start(self, tick_seconds: float = 0.1) -> TrafficExporter:
        """Serve /metrics on a free port and simulate traffic in real time."""
        from prometheus_client import start_http_server

        self._httpd, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self._thread = threading.Thread(target=self._run, args=(tick_seconds,), daemon=True)
        self._thread.start()
        return self

    def _run(self, tick_seconds: float) -> None:
        last = time.monotonic()
        while not self._stop.wait(tick_seconds):
            now = time.monotonic()
            self.tick(now - last)
            last = now

    def stop(self) -> None:
        """Stop the traffic and the HTTP server."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> TrafficExporter:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def target(self) -> str:
        """host:port for a Prometheus scrape config."""
        assert self._httpd is not None, "exporter not started"
        return f"127.0.0.1:{self._httpd.server_port}"


# --------------------------------------------------------------------------- real Prometheus


def ensure_prometheus() -> str | None:
    """The Prometheus binary, apt-installed if missing and possible; None when unavailable."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
                 ["apt-get", "update"],
                 ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]):
        try:
            subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = shutil.which("prometheus")
        if found:
            return found
    return None


@dataclass
class PrometheusServer:
    """A running Prometheus."""

    url: str
    process: subprocess.Popen
    workdir: Path

    def query(self, promql: str) -> dict:
        """Run an instant query (for test assertions)."""
        return httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()


@contextlib.contextmanager
def prometheus_server(targets: list[str], workdir: Path, *, binary: str | None = None,
                      scrape_interval: str = "1s", ready_timeout: float = 30.0) -> Iterator[PrometheusServer]:
    """Run Prometheus on a free 127.0.0.1 port scraping `targets`; yield once every target is up."""
    binary = binary or ensure_prometheus()
    if binary is None:
        raise RuntimeError("prometheus is not installed and cannot be installed here")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: llm\n"
        f"    scrape_interval: {scrape_interval}\n"
        "    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, workdir)
    try:
        _wait_until_scraping(server, len(targets), ready_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_scraping(server: PrometheusServer, expected: int, timeout: float) -> None:
    # polling a real server until it is ready is waiting for a fact, not sleeping to pass
    deadline = time.monotonic() + timeout
    last = "not started"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.workdir / "prometheus.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prometheus exited with {server.process.returncode}: {log}")
        try:
            targets = httpx.get(f"{server.url}/api/v1/targets", timeout=1).json()["data"]["activeTargets"]
            up = [t for t in targets if t.get("health") == "up"]
            if len(up) >= expected:
                return
            last = f"{len(up)}/{expected} targets up"
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}"
        time.sleep(0.1)
    raise RuntimeError(f"prometheus not scraping after {timeout:g}s ({last})")
