"""An embedded metrics endpoint for `modelctl demo`: simulated traffic in the http-json format.

It answers `GET /metrics/<model>` like the http-json provider expects (docs/reference.md): cumulative
`requests`, `errors`, `latency_bucket` (a histogram whose p95 is the version's `latency_p95_ms`)
and `cost_total` counters, and `latency_p95_ms` / `cost_per_request` gauges per version.
Traffic is computed from the elapsed time when a request arrives (no background thread, no
randomness): each version gets its share of `rps` at its current error rate, and scheduled
changes (a regression) take effect at their exact time, so the demo tells the same story on
every run and on any machine.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class VersionTraffic:
    """One version's simulated traffic: its share of requests and how they go."""

    share: float  # fraction of all requests, 0..1
    error_rate: float = 0.01
    latency_p95_ms: float = 850.0
    cost_per_request: float = 0.0011
    requests: int = 0
    errors: int = 0
    cost: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BOUNDS))
    _req_carry: float = 0.0
    _err_carry: float = 0.0


# histogram bounds in ms (the last is +Inf)
BOUNDS: tuple[float, ...] = (250.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0, 2000.0, 3000.0, math.inf)


def _share_below(bound: float, p95: float) -> float:
    """Share of requests at or below `bound` when latencies spread evenly from 0.6 to 1.02 of p95 / 0.95."""
    top = p95 / 0.95 * 1.02
    low = top * 0.6
    if bound >= top:
        return 1.0
    return max(0.0, (bound - low) / (top - low))


class DemoMetrics:
    """An http-json endpoint on 127.0.0.1 simulating traffic for the versions of one model."""

    def __init__(self, model: str, rps: float = 2000.0, clock: Callable[[], float] = time.monotonic):
        self.model = model
        self.rps = rps
        self._clock = clock
        self._versions: dict[str, VersionTraffic] = {}
        self._schedule: list[tuple[float, str, dict[str, float]]] = []
        self._lock = threading.Lock()
        self._last = clock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- traffic ---------------------------------------------------------------------------
    def set(self, version: str, **changes: float) -> None:
        """Add a version or change its share, error_rate, latency_p95_ms or cost_per_request from now on."""
        with self._lock:
            self._advance(self._clock())
            self._apply(version, changes)

    def at(self, after_seconds: float, version: str, **changes: float) -> None:
        """Schedule a change (for example a regression) `after_seconds` from now."""
        with self._lock:
            self._schedule.append((self._clock() + after_seconds, version, changes))
            self._schedule.sort(key=lambda item: item[0])

    def _apply(self, version: str, changes: Mapping[str, float]) -> None:
        entry = self._versions.setdefault(version, VersionTraffic(share=0.0))
        for key, value in changes.items():
            if key not in ("share", "error_rate", "latency_p95_ms", "cost_per_request"):
                raise ValueError(f"unknown traffic setting {key!r}")
            setattr(entry, key, float(value))

    def _advance(self, now: float) -> None:
        """Add the traffic of the time since the last advance, splitting it at scheduled changes."""
        while self._schedule and self._schedule[0][0] <= now:
            when, version, changes = self._schedule.pop(0)
            self._run(when)
            self._apply(version, changes)
        self._run(now)

    def _run(self, until: float) -> None:
        seconds = max(0.0, until - self._last)
        self._last = max(self._last, until)
        for entry in self._versions.values():
            entry._req_carry += self.rps * entry.share * seconds
            n = math.floor(entry._req_carry)
            entry._req_carry -= n
            entry._err_carry += n * entry.error_rate
            e = math.floor(entry._err_carry + 1e-9)  # errors spread evenly: no randomness
            entry._err_carry -= e
            entry.requests += n
            entry.errors += e
            entry.cost += n * entry.cost_per_request
            # the histogram keeps whole counts that never decrease: the cumulative share of all requests
            entry.buckets = [max(old, math.floor(entry.requests * _share_below(b, entry.latency_p95_ms)))
                             for old, b in zip(entry.buckets, BOUNDS)]

    def document(self) -> dict[str, Any]:
        """The http-json document a GET returns now."""
        with self._lock:
            self._advance(self._clock())
            versions = {
                v: {"requests": t.requests, "errors": t.errors, "cost_total": round(t.cost, 9),
                    "latency_bucket": {("+Inf" if math.isinf(b) else f"{b:g}"): c for b, c in zip(BOUNDS, t.buckets)},
                    "latency_p95_ms": t.latency_p95_ms, "cost_per_request": t.cost_per_request}
                for v, t in self._versions.items()
            }
        return {"model": self.model, "timestamp": round(time.time(), 3), "versions": versions}

    # -- serving ---------------------------------------------------------------------------
    def start(self) -> DemoMetrics:
        """Serve on a free 127.0.0.1 port in a daemon thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                if self.path.split("?")[0] == f"/metrics/{owner.model}":
                    status, body = 200, json.dumps(owner.document()).encode()
                else:
                    status, body = 404, b'{"error": "no such model"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DemoMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The metrics.url for this endpoint (with `{model}`)."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics/{{model}}"
