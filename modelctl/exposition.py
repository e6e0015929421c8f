"""The controller's own metrics: a small registry of gauges and counters, the Prometheus text
format (version 0.0.4), and a loopback-or-any HTTP server for `/metrics` and `/healthz`.

Written here instead of depending on prometheus_client: the controller needs a dozen families,
label escaping and one HTTP handler, and this keeps `import modelctl` free of a server library.
The format is checked against prometheus_client's own parser and a real Prometheus in the tests.

`/healthz` answers 200 while the controller's loop has completed a cycle recently (within
`stale_after` seconds, set from the poll interval), 503 otherwise: a liveness probe restarts a
controller whose loop is stuck, not one whose metrics backend is down (that is a poll error,
counted on /metrics).
"""
from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def _labels(values: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: name, help text, type and its samples by label set."""

    name: str
    help: str
    kind: str  # "gauge" or "counter"
    samples: dict[Labels, float] = field(default_factory=dict)

    def text(self) -> str:
        """This family in the exposition format (nothing when it has no samples)."""
        if not self.samples:
            return ""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.samples.items()):
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{self.name}{{{inner}}} {_number(value)}" if inner else f"{self.name} {_number(value)}")
        return "\n".join(lines) + "\n"


class Metrics:
    """Thread-safe gauges and counters; the controller writes, the HTTP thread reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, Family] = {}

    def declare(self, name: str, help: str, kind: str = "gauge") -> None:
        """Declare a family once (its HELP and TYPE); samples come with set/inc."""
        if kind not in ("gauge", "counter"):
            raise ValueError(kind)
        with self._lock:
            self._families.setdefault(name, Family(name, help, kind))

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge's sample."""
        with self._lock:
            self._families[name].samples[_labels(labels)] = float(value)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter's sample (created at 0)."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            samples = self._families[name].samples
            key = _labels(labels)
            samples[key] = samples.get(key, 0.0) + amount

    def remove(self, name: str, **match: str) -> None:
        """Drop a gauge's samples whose labels include `match` (a model no longer watched)."""
        want = set(_labels(match))
        with self._lock:
            samples = self._families[name].samples
            for key in [k for k in samples if want <= set(k)]:
                del samples[key]

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value (None when absent)."""
        with self._lock:
            return self._families[name].samples.get(_labels(labels))

    def text(self) -> str:
        """Every family, sorted by name."""
        with self._lock:
            return "".join(f.text() for _, f in sorted(self._families.items()))


class Health:
    """Whether the loop is alive: `beat()` after every cycle; healthy while the last beat is recent."""

    def __init__(self, stale_after: float, monotonic: Callable[[], float] = time.monotonic):
        self.stale_after = stale_after
        self._monotonic = monotonic
        self._last: float | None = None
        self.started = monotonic()

    def beat(self) -> None:
        """A cycle completed."""
        self._last = self._monotonic()

    def healthy(self) -> tuple[bool, str]:
        """(healthy, why) for /healthz."""
        now = self._monotonic()
        if self._last is None:
            # starting: the first cycle may take a while (a clone, the first fetch)
            if now - self.started <= self.stale_after:
                return True, "starting"
            return False, f"no cycle completed in {now - self.started:.0f}s"
        age = now - self._last
        if age <= self.stale_after:
            return True, f"last cycle {age:.0f}s ago"
        return False, f"last cycle {age:.0f}s ago (more than {self.stale_after:g}s)"


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Server:
    """`/metrics` and `/healthz` on host:port, served from a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, host: str = "127.0.0.1", port: int = 0):
        outer = self
        self.metrics = metrics
        self.health = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    outer._answer(self, 200, outer.metrics.text(), CONTENT_TYPE)
                elif path in ("/healthz", "/livez"):
                    ok, why = outer.health.healthy()
                    outer._answer(self, 200 if ok else 503, ("ok: " if ok else "unhealthy: ") + why + "\n")
                else:
                    outer._answer(self, 404, "not found: try /metrics or /healthz\n")

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line each
                pass

        server_class = _Server6 if ":" in host else ThreadingHTTPServer  # ":" only in an IPv6 address
        self._server = server_class((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="modelctl-metrics", daemon=True)

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, code: int, body: str,
                content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @property
    def port(self) -> int:
        """The port served (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> Server:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def parse_port(text: str) -> tuple[str, int]:
    """`--metrics-port` value: PORT (all interfaces, as a pod needs) or HOST:PORT; ValueError if bad."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - a scrape target in a pod listens on all interfaces
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not a port (1-65535) or HOST:PORT")
    return host, int(port)


def families(metrics: Metrics, declared: Iterable[tuple[str, str, str]]) -> Metrics:
    """Declare several (name, help, kind) families at once."""
    for name, help_text, kind in declared:
        metrics.declare(name, help_text, kind)
    return metrics


# -- what watch exports ---------------------------------------------------------------------------

WATCH_FAMILIES = (
    ("modelctl_watch_canary_percent", "The live canary's share of traffic, by model and version.", "gauge"),
    ("modelctl_watch_verdict", "1 for each metric's (and segment's) current verdict, by verdict.", "gauge"),
    ("modelctl_watch_statistic", "Each metric's sequential statistic (cusum_llr; gauges: the ratio).", "gauge"),
    ("modelctl_watch_boundary", "The fail boundary the statistic is compared with.", "gauge"),
    ("modelctl_watch_last_successful_poll_timestamp_seconds", "When a poll last got usable data (unix).", "gauge"),
    ("modelctl_watch_polls_total", "Polls made, by model.", "counter"),
    ("modelctl_watch_poll_errors_total", "Polls without usable data, by model.", "counter"),
    ("modelctl_watch_decisions_total", "Decisions written (rollback, step, promotion) or held, by model and kind.",
     "counter"),
    ("modelctl_watch_notifications_total", "Webhook deliveries, by webhook, event and outcome (ok, failed).",
     "counter"),
)
# watch --all's own state: the faults that concern the whole controller, and each model's failures
CONTROLLER_FAMILIES = (
    ("modelctl_controller_cycles_total", "Cycles completed.", "counter"),
    ("modelctl_controller_cycle_seconds", "How long the last cycle took.", "gauge"),
    ("modelctl_controller_followed_models", "Models with a live canary or shadow being followed.", "gauge"),
    ("modelctl_controller_fetch_failures_total", "Cycles whose fetch of the remote failed.", "counter"),
    ("modelctl_controller_consecutive_fetch_failures", "Cycles in a row whose fetch failed (0 when it works).",
     "gauge"),
    ("modelctl_controller_last_successful_fetch_timestamp_seconds", "When the remote was last fetched (unix).",
     "gauge"),
    ("modelctl_controller_metrics_read_errors_total", "Metrics reads that failed for every followed model at once "
     "(the backend down or refusing).", "counter"),
    ("modelctl_controller_model_errors_total", "Cycles in which following a model failed (a damaged file, an "
     "unexpected error), by model.", "counter"),
    ("modelctl_watch_ended_total", "Watches that ended, by model and outcome (canary-ended: rolled back, promoted, "
     "removed or renamed elsewhere).", "counter"),
)
_VERDICTS = ("pass", "fail", "inconclusive", "insufficient_data", "error")
_PER_MODEL_GAUGES = ("modelctl_watch_canary_percent", "modelctl_watch_verdict", "modelctl_watch_statistic",
                     "modelctl_watch_boundary")


class WatchMetrics:
    """Keeps the WATCH_FAMILIES up to date from what watch reports (polls, events, its result)."""

    def __init__(self, metrics: Metrics | None = None):
        self.metrics = families(metrics or Metrics(), WATCH_FAMILIES + CONTROLLER_FAMILIES)

    def cycle(self, report: Any) -> None:
        """After each `watch --all` cycle (a controller.CycleReport)."""
        m = self.metrics
        m.inc("modelctl_controller_cycles_total")
        m.set("modelctl_controller_cycle_seconds", report.seconds)
        m.set("modelctl_controller_followed_models", len(report.followed))
        m.set("modelctl_controller_consecutive_fetch_failures", report.fetch_failures)
        if report.fetch_error is not None:
            m.inc("modelctl_controller_fetch_failures_total")
        else:
            m.inc("modelctl_controller_fetch_failures_total", 0)  # present from the start: rate() needs a zero
        if report.last_fetch is not None:
            m.set("modelctl_controller_last_successful_fetch_timestamp_seconds", report.last_fetch)
        m.inc("modelctl_controller_metrics_read_errors_total", len(report.read_errors))
        for model in report.errors:
            if model != "*":
                m.inc("modelctl_controller_model_errors_total", model=model)
        for result in report.ended:
            self.ended(result)
            for name in _PER_MODEL_GAUGES:
                m.remove(name, model=result.model)  # no judgement is shown for a canary no longer followed

    def poll(self, report: Any) -> None:
        """After each poll (a watch.PollReport)."""
        m, model = self.metrics, report.model
        m.inc("modelctl_watch_polls_total", model=model)
        for name in _PER_MODEL_GAUGES:
            m.remove(name, model=model)  # a metric, segment or canary that is gone leaves no stale sample
        if report.canary is not None:
            m.set("modelctl_watch_canary_percent", report.canary.percent, model=model, version=report.canary.version)
        decision = report.decision
        if report.error or decision is None or any(r.verdict == "error" for r in decision.results if not r.segment):
            if report.error or decision is not None:
                m.inc("modelctl_watch_poll_errors_total", model=model)
        else:
            m.set("modelctl_watch_last_successful_poll_timestamp_seconds", report.at, model=model)
        for r in decision.results if decision is not None else ():
            labels = {"model": model, "metric": r.metric, "segment": r.segment or ""}
            for verdict in _VERDICTS:
                m.set("modelctl_watch_verdict", 1.0 if r.verdict == verdict else 0.0, verdict=verdict, **labels)
            for family, value in (("modelctl_watch_statistic", r.statistic_value),
                                  ("modelctl_watch_boundary", r.bound)):
                if isinstance(value, (int, float)) and math.isfinite(value):
                    m.set(family, value, **labels)

    def ended(self, result: Any) -> None:
        """A watch.WatchResult: counted as the decision it made, if it made one."""
        kind = {"rolled-back": "rollback", "promoted": "promotion", "held": "hold"}.get(result.outcome)
        if kind is not None:
            self.decided(result.model, kind)
        self.metrics.inc("modelctl_watch_ended_total", model=result.model, outcome=result.outcome)

    def event(self, event: Any, model: str | None = None) -> None:
        """A watch.WatchEvent: a step is counted as a decision of the model it names (`model`: a single watch's)."""
        if event.kind == "step":
            named = event.data.get("model") or model
            if named:
                self.decided(named, "step")

    def decided(self, model: str, kind: str) -> None:
        """A decision this process wrote (rollback, step, promotion) or a hold."""
        self.metrics.inc("modelctl_watch_decisions_total", model=model, kind=kind)

    def notified(self, webhook: str, event: str, ok: bool) -> None:
        """A webhook delivery's outcome."""
        self.metrics.inc("modelctl_watch_notifications_total", webhook=webhook, event=event,
                         outcome="ok" if ok else "failed")
