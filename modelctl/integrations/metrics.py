"""Per-request serving metrics under the names the registry template's PromQL queries read.

Every request a gateway serves from a :class:`modelctl.serving.Pick` is counted here, labelled
``model``, ``version``, ``role`` (active, canary or shadow) and ``segment`` (empty when not given):

| series | type | meaning |
| --- | --- | --- |
| ``llm_requests_total`` | counter | requests served (successes and errors) |
| ``llm_errors_total`` | counter | requests that failed (after the bundle's fallbacks) |
| ``llm_latency_ms`` | histogram (``_bucket``, ``_sum``, ``_count``) | request latency in milliseconds |
| ``llm_cost_total`` | counter | provider cost in USD, when the response reports it |

These are the series ``metrics.queries`` in ``modelctl.yaml`` (and the Prometheus provider's
defaults) aggregate with ``sum by (segment)``, so ``modelctl watch --provider prometheus`` judges a
canary served through this module with no query writing. Latency is in milliseconds because
``watch`` reads the histogram's ``le`` bounds as milliseconds.

With prometheus_client installed the series live in a ``CollectorRegistry`` (a private one unless
``registry=`` names yours); without it a small pure-Python store renders the same text exposition
format (``backend="pure"`` forces it). :meth:`ServingMetrics.serve` exposes ``/metrics`` over HTTP.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..serving import Pick

__all__ = ["ServingMetrics", "MetricsServer", "REQUESTS", "ERRORS", "LATENCY", "COST", "LABELS", "BUCKETS_MS"]

REQUESTS = "llm_requests_total"
ERRORS = "llm_errors_total"
LATENCY = "llm_latency_ms"
COST = "llm_cost_total"
LABELS = ("model", "version", "role", "segment")
# Bounds in milliseconds: fine where LLM latencies sit (0.1 s to a few s), coarse beyond.
BUCKETS_MS: tuple[float, ...] = (25, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1500,
                                 2000, 3000, 5000, 10000, 30000, 60000)
_HELP = {REQUESTS: "LLM requests served, by model version and role",
         ERRORS: "LLM requests that failed after the bundle's fallbacks",
         LATENCY: "LLM request latency in milliseconds",
         COST: "LLM provider cost in USD"}

Labels = tuple[str, str, str, str]


def _have_prometheus_client() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class _PureStore:
    """The fallback without prometheus_client: counters and a cumulative histogram in dicts."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.lock = threading.Lock()
        self.requests: dict[Labels, float] = {}
        self.errors: dict[Labels, float] = {}
        self.cost: dict[Labels, float] = {}
        self.hist: dict[Labels, list[float]] = {}  # per-bucket counts (not cumulative), then sum
        self.counts: dict[Labels, float] = {}

    def touch(self, labels: Labels) -> None:
        with self.lock:
            self._touch(labels)

    def _touch(self, labels: Labels) -> None:
        for table in (self.requests, self.errors, self.cost, self.counts):
            table.setdefault(labels, 0.0)
        self.hist.setdefault(labels, [0.0] * (len(self.buckets) + 2))

    def observe(self, labels: Labels, ms: float, error: bool, cost: float | None) -> None:
        with self.lock:
            self._touch(labels)
            self.requests[labels] += 1
            if error:
                self.errors[labels] += 1
            if cost is not None:
                self.cost[labels] += cost
            hist = self.hist[labels]
            index = next((i for i, bound in enumerate(self.buckets) if ms <= bound), len(self.buckets))
            hist[index] += 1
            hist[-1] += ms
            self.counts[labels] += 1

    def exposition(self) -> bytes:
        lines: list[str] = []
        with self.lock:
            for name, table in ((REQUESTS, self.requests), (ERRORS, self.errors), (COST, self.cost)):
                lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} counter"]
                lines += [f"{name}{{{_labels(k)}}} {_num(v)}" for k, v in sorted(table.items())]
            lines += [f"# HELP {LATENCY} {_HELP[LATENCY]}", f"# TYPE {LATENCY} histogram"]
            for key, hist in sorted(self.hist.items()):
                running = 0.0
                for bound, count in zip((*self.buckets, math.inf), hist):
                    running += count
                    le = "+Inf" if bound == math.inf else _num(float(bound))
                    lines.append(f'{LATENCY}_bucket{{{_labels(key)},le="{le}"}} {_num(running)}')
                lines.append(f"{LATENCY}_count{{{_labels(key)}}} {_num(self.counts[key])}")
                lines.append(f"{LATENCY}_sum{{{_labels(key)}}} {_num(hist[-1])}")
        return ("\n".join(lines) + "\n").encode("utf-8")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(key: Labels) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in zip(LABELS, key))


def _num(value: float) -> str:
    return repr(float(value))


class _ClientStore:
    """The series in a prometheus_client registry."""

    def __init__(self, buckets: Sequence[float], registry: Any):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        # prometheus_client appends _total to a counter's name itself
        self.requests = Counter(REQUESTS[:-6], _HELP[REQUESTS], LABELS, registry=self.registry)
        self.errors = Counter(ERRORS[:-6], _HELP[ERRORS], LABELS, registry=self.registry)
        self.cost = Counter(COST[:-6], _HELP[COST], LABELS, registry=self.registry)
        self.latency = Histogram(LATENCY, _HELP[LATENCY], LABELS, buckets=tuple(buckets), registry=self.registry)

    def touch(self, labels: Labels) -> None:
        for metric in (self.requests, self.errors, self.cost, self.latency):
            metric.labels(*labels)

    def observe(self, labels: Labels, ms: float, error: bool, cost: float | None) -> None:
        # every series of the labels exists from the first request (at zero), as in the pure store
        self.requests.labels(*labels).inc()
        self.errors.labels(*labels).inc(1 if error else 0)
        self.cost.labels(*labels).inc(cost or 0.0)
        self.latency.labels(*labels).observe(ms)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        data: bytes = generate_latest(self.registry)
        return data


class ServingMetrics:
    """Counters and a latency histogram per model, version, role and segment (see the module docstring)."""

    def __init__(self, *, backend: str = "auto", registry: Any = None, buckets_ms: Sequence[float] = BUCKETS_MS,
                 clock: Callable[[], float] = time.perf_counter):
        if backend not in ("auto", "prometheus_client", "pure"):
            raise ValueError(f"backend must be auto, prometheus_client or pure, not {backend!r}")
        if backend == "auto":
            backend = "prometheus_client" if _have_prometheus_client() else "pure"
        self.backend = backend
        self._clock = clock
        self._store: _PureStore | _ClientStore = (
            _ClientStore(buckets_ms, registry) if backend == "prometheus_client" else _PureStore(buckets_ms))

    def touch(self, model: str, version: str, role: str, segment: str | None = None) -> None:
        """Create a version's series at zero, so Prometheus sees them before its first request."""
        self._store.touch((model, version, role, segment or ""))

    def observe(self, model: str, version: str, role: str, seconds: float, *, error: bool = False,
                cost: float | None = None, segment: str | None = None) -> None:
        """Count one request that took ``seconds`` (an error when ``error``), with its cost when known."""
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            cost = None  # a counter never goes down: a negative or NaN cost is not recorded
        self._store.observe((model, version, role, segment or ""), max(0.0, seconds) * 1000.0, error, cost)

    def observe_pick(self, pick: Pick, seconds: float, *, error: bool = False, cost: float | None = None,
                     segment: str | None = None) -> None:
        """:meth:`observe` for the version and role a :class:`modelctl.serving.Pick` chose."""
        self.observe(pick.model, pick.version, pick.role, seconds, error=error, cost=cost, segment=segment)

    @contextlib.contextmanager
    def timed(self, pick: Pick, segment: str | None = None) -> Iterator[None]:
        """Time the block as one request of ``pick``; an exception leaving it counts as an error."""
        start = self._clock()
        try:
            yield
        except BaseException:
            self.observe_pick(pick, self._clock() - start, error=True, segment=segment)
            raise
        self.observe_pick(pick, self._clock() - start, segment=segment)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return self._store.exposition()

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` (0: a free port) in a daemon thread."""
        return MetricsServer(self, port, addr)


class MetricsServer:
    """``GET /metrics`` for one :class:`ServingMetrics`; ``close()`` stops it."""

    def __init__(self, metrics: ServingMetrics, port: int, addr: str):
        owner = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server hook's name)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = owner.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server signature)
                return  # scrapes are not worth a line on stderr each

        self._httpd = ThreadingHTTPServer((addr, port), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://{addr}:{self.port}/metrics"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="modelctl-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
