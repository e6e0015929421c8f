"""Notifications: what watch decided, POSTed to the webhooks configured in modelctl.yaml.

    notifications:
      timeout: 5           # seconds for one attempt
      deadline: 30         # seconds for all attempts of one notification
      retries: 3           # attempts after the first
      webhooks:
        - name: ops-slack              # how the log and /metrics name it (the URL is a secret)
          url_env: SLACK_WEBHOOK_URL   # the URL comes from this environment variable
          format: slack                # slack: {"text": ...}; json: the document below
          events: [rollback, hold]     # default: rollback, step, promotion, hold
        - name: audit
          url_env: AUDIT_HOOK_URL
          token_env: AUDIT_HOOK_TOKEN  # optional: sent as "Authorization: Bearer <token>"
          format: json

A decision is made (and pushed) first; notifying comes after it and never changes it. Delivery
runs on a background thread with bounded retries under a deadline, so a webhook that hangs or
fails costs the controller nothing but a line in its log and a count on its /metrics. Only the
process whose write landed notifies: a replica that lost the race to the same decision stays
quiet (watch decides that; this module only delivers).
"""
from __future__ import annotations

import json
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import UsageError

EVENTS = ("rollback", "step", "promotion", "hold")
FORMATS = ("json", "slack")
SCHEMA = "modelctl/v1"
DEFAULT_TIMEOUT = 5.0
DEFAULT_DEADLINE = 30.0
DEFAULT_RETRIES = 3
MAX_WEBHOOKS = 20
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Webhook:
    """One configured receiver, with its URL and token already read from the environment."""

    name: str
    url: str
    format: str = "json"
    events: tuple[str, ...] = EVENTS
    token: str | None = None

    def __repr__(self) -> str:  # the URL and token are secrets: never in a log or a traceback
        return f"Webhook(name={self.name!r}, format={self.format!r}, events={self.events!r})"


@dataclass(frozen=True, slots=True)
class Settings:
    """The notifications section: receivers and the delivery bounds shared by them."""

    webhooks: tuple[Webhook, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    deadline: float = DEFAULT_DEADLINE
    retries: int = DEFAULT_RETRIES


@dataclass(frozen=True, slots=True)
class Event:
    """A decision worth telling people about."""

    kind: str  # one of EVENTS
    model: str
    version: str | None  # the canary (or promoted) version the decision is about
    active: str | None = None  # the version serving the rest of the traffic afterwards
    percent: float | None = None  # the canary's share after the decision (0 after a rollback)
    reason: str = ""
    commit: str | None = None  # the registry commit that carries the decision (None for a hold)
    metrics: tuple[Mapping[str, Any], ...] = ()  # per metric: name, verdict, statistic, boundary
    at: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        """The generic JSON body (schemas/output/notification.schema.json)."""
        return {
            "schema": SCHEMA,
            "event": self.kind,
            "model": self.model,
            "version": self.version,
            "active": self.active,
            "percent": self.percent,
            "reason": self.reason,
            "commit": self.commit,
            "metrics": [dict(m) for m in self.metrics],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
        }

    def text(self) -> str:
        """One human line, for chat receivers (Slack's incoming-webhook `text`)."""
        what = {
            "rollback": f"rolled back {self.model} {self.version}; {self.active or 'the active version'} serves all traffic",
            "step": f"moved the {self.model} canary {self.version} to {_pct(self.percent)}",
            "promotion": f"promoted {self.model} {self.version} to active",
            "hold": f"is holding the {self.model} canary {self.version} at {_pct(self.percent)}",
        }[self.kind]
        failing = [m for m in self.metrics if m.get("verdict") == "fail"]
        evidence = ""
        if failing:
            evidence = " (" + ", ".join(_evidence(m) for m in failing) + ")"
        reason = f": {self.reason}" if self.reason else ""
        commit = f" [commit {self.commit[:12]}]" if self.commit else ""
        return f"modelctl {what}{evidence}{reason}{commit}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one notification at one receiver."""

    webhook: str
    event: str
    model: str
    ok: bool
    attempts: int
    status: int | None  # the last HTTP status, None when no answer came
    error: str | None
    seconds: float

    def line(self) -> str:
        """The log line."""
        if self.ok:
            return f"notified {self.webhook} of the {self.event} of {self.model} ({self.attempts} attempt(s))"
        return (f"could not notify {self.webhook} of the {self.event} of {self.model} after {self.attempts} "
                f"attempt(s) in {self.seconds:.1f}s: {self.error}; the decision stands")


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:g}%"


def _evidence(m: Mapping[str, Any]) -> str:
    stat, bound = m.get("statistic"), m.get("boundary")
    if isinstance(stat, (int, float)) and isinstance(bound, (int, float)):
        return f"{m.get('name')} {stat:.3g} > {bound:.3g}"
    return str(m.get("name"))


# -- configuration -------------------------------------------------------------------------------

def settings(section: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> Settings:
    """The notifications section with URLs and tokens from `env`; UsageError naming what is wrong."""
    if not section:
        return Settings()
    env = os.environ if env is None else env
    where = "modelctl.yaml notifications"
    timeout = _number(section.get("timeout", DEFAULT_TIMEOUT), f"{where}.timeout", 0.05, 300)
    deadline = _number(section.get("deadline", DEFAULT_DEADLINE), f"{where}.deadline", 0.05, 3600)
    retries = section.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
        raise UsageError(f"{where}.retries must be a whole number from 0 to 20", hint="fix modelctl.yaml")
    hooks = section.get("webhooks") or []
    if not isinstance(hooks, list) or len(hooks) > MAX_WEBHOOKS:
        raise UsageError(f"{where}.webhooks must be a list of at most {MAX_WEBHOOKS} receivers",
                         hint="fix modelctl.yaml")
    built: list[Webhook] = []
    for i, hook in enumerate(hooks):
        built.append(_webhook(hook, f"{where}.webhooks[{i}]", env))
    names = [h.name for h in built]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UsageError(f"{where}.webhooks: the name {dup!r} is used twice", hint="give each receiver its own name")
    return Settings(tuple(built), timeout, deadline, retries)


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise UsageError(f"{where} must be a number of seconds from {low:g} to {high:g}", hint="fix modelctl.yaml")
    return float(value)


def _webhook(hook: Any, where: str, env: Mapping[str, str]) -> Webhook:
    if not isinstance(hook, Mapping):
        raise UsageError(f"{where} must be a mapping with name and url_env", hint="fix modelctl.yaml")
    unknown = sorted(set(hook) - {"name", "url_env", "token_env", "format", "events"})
    if unknown:
        raise UsageError(f"{where} has an unknown key {unknown[0]!r}",
                         hint="the keys are name, url_env, token_env, format, events")
    name, url_env = hook.get("name"), hook.get("url_env")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise UsageError(f"{where}.name must be a short text", hint="fix modelctl.yaml")
    if not isinstance(url_env, str) or not url_env.strip():
        raise UsageError(f"{where}.url_env must name the environment variable holding the URL",
                         hint="the URL is a secret: keep it out of the repository")
    url = env.get(url_env, "").strip()
    if not url:
        raise UsageError(f"webhook {name!r}: the environment variable {url_env} is not set",
                         hint=f"set {url_env} to the receiver's URL, or remove the webhook from modelctl.yaml")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"webhook {name!r}: {url_env} is not an http(s) URL", hint=f"check {url_env}")
    token = None
    token_env = hook.get("token_env")
    if token_env is not None:
        if not isinstance(token_env, str) or not token_env.strip():
            raise UsageError(f"{where}.token_env must name an environment variable", hint="fix modelctl.yaml")
        token = env.get(token_env, "").strip()
        if not token:
            raise UsageError(f"webhook {name!r}: the environment variable {token_env} is not set",
                             hint=f"set {token_env}, or remove token_env from the webhook")
    fmt = hook.get("format", "json")
    if fmt not in FORMATS:
        raise UsageError(f"{where}.format must be one of {', '.join(FORMATS)}", hint="fix modelctl.yaml")
    events = hook.get("events", list(EVENTS))
    if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
        raise UsageError(f"{where}.events must list some of {', '.join(EVENTS)}", hint="fix modelctl.yaml")
    return Webhook(name.strip(), url, fmt, tuple(dict.fromkeys(events)), token)


# -- delivery ------------------------------------------------------------------------------------

Post = Callable[[str, bytes, Mapping[str, str], float], int]


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST with httpx; the HTTP status (raises httpx's errors for no answer)."""
    import httpx  # lazily: only a controller with webhooks needs it

    response = httpx.post(url, content=body, headers=dict(headers), timeout=timeout, follow_redirects=False)
    return response.status_code


class Notifier:
    """Delivers events to the configured webhooks on one background thread; never raises into watch."""

    def __init__(self, config: Settings, *, post: Post = http_post, report: Callable[[Delivery], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random):
        self.config = config
        self._post = post
        self._report = report
        self._monotonic = monotonic
        self._sleep = sleep
        self._rand = rand
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # the latest outcomes (bounded: a controller runs for weeks); each is also given to `report`
        self.deliveries: deque[Delivery] = deque(maxlen=1000)

    def __bool__(self) -> bool:
        return bool(self.config.webhooks)

    def notify(self, event: Event) -> None:
        """Queue the event for every webhook that wants its kind; returns at once."""
        if event.kind not in EVENTS:
            raise ValueError(f"unknown event kind {event.kind!r}")
        if not any(event.kind in h.events for h in self.config.webhooks):
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="modelctl-notify", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:  # receivers stalled for long: say so like any failed delivery, never wait
            for hook in self.config.webhooks:
                if event.kind in hook.events:
                    self._record(Delivery(hook.name, event.kind, event.model, False, 0, None,
                                          "dropped: the delivery queue is full (a receiver keeps stalling)", 0.0))

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for queued events to be delivered (or given up); True when done."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                for hook in self.config.webhooks:
                    if event.kind in hook.events:
                        self._record(self.deliver(hook, event))
            finally:
                self._queue.task_done()

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
        if self._report is not None:
            try:
                self._report(delivery)
            except Exception:  # noqa: BLE001 - a reporting bug must not stop delivery
                pass

    def deliver(self, hook: Webhook, event: Event) -> Delivery:
        """POST one event to one webhook: bounded retries within the deadline; never raises."""
        body, headers = payload(hook, event)
        started = self._monotonic()
        attempts, status, error = 0, None, None
        while True:
            left = self.config.deadline - (self._monotonic() - started)
            if left <= 0:
                error = error or "deadline reached"
                break
            attempts += 1
            status, error = None, None
            try:
                status = self._post(hook.url, body, headers, min(self.config.timeout, left))
            except Exception as exc:  # noqa: BLE001 - any transport failure is one failed attempt
                error = _describe(exc)
            if status is not None and 200 <= status < 300:
                return Delivery(hook.name, event.kind, event.model, True, attempts, status, None,
                                self._monotonic() - started)
            if status is not None:
                error = f"HTTP {status}"
                if status not in _RETRY_STATUS:
                    break  # the receiver refused it (bad token, gone): asking again will not help
            if attempts > self.config.retries:
                break
            delay = min(0.25 * 2 ** (attempts - 1), 5.0) * (0.5 + self._rand() / 2)
            if self._monotonic() + delay - started >= self.config.deadline:
                error = f"{error}; deadline reached"
                break
            self._sleep(delay)
        return Delivery(hook.name, event.kind, event.model, False, attempts, status, error,
                        self._monotonic() - started)


def payload(hook: Webhook, event: Event) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one POST."""
    doc: dict[str, Any] = {"text": event.text()} if hook.format == "slack" else event.document()
    headers = {"Content-Type": "application/json", "User-Agent": "modelctl"}
    if hook.token:
        headers["Authorization"] = f"Bearer {hook.token}"
    return json.dumps(doc, sort_keys=True).encode(), headers


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return "no answer before the timeout"
    if "Connect" in name:
        return "connection refused or unreachable"
    return name

