"""Metrics providers for `watch`: one module per provider behind the `Provider` Protocol.

    provider = make_provider(registry_config, provider=cli_provider, url=cli_url)
    readings = provider.read("support-agent", ["2.3.1", "2.4.0"], since_seconds=600)
    # -> {"2.3.1": Reading(...), "2.4.0": Reading(...)}; MetricsError when the endpoint fails
    poll = take_poll(provider, "support-agent", control="2.3.1", canary="2.4.0", percent=5, ...)
    # -> observation.Poll: the readings, or `error` set when the read failed in any way

Providers report cumulative counters as the source keeps them; the judgement differences polls.
httpx is imported only when a provider first reads, so importing this package is cheap.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config import metrics_rules, raise_first
from ..errors import UsageError
from ..observation import Poll, Reading
from .base import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, HttpLimits, Provider
from .http_json import HttpJsonProvider
from .prometheus import DEFAULT_QUERIES, PrometheusProvider

PROVIDERS: dict[str, type] = {
    "prometheus": PrometheusProvider,
    "http-json": HttpJsonProvider,
}

DEFAULT_URLS = {
    "prometheus": "http://127.0.0.1:9090",
    "http-json": "http://127.0.0.1:9108/metrics/{model}",
}

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

__all__ = [
    "PROVIDERS",
    "DEFAULT_QUERIES",
    "HttpJsonProvider",
    "HttpLimits",
    "PrometheusProvider",
    "Provider",
    "make_provider",
    "take_poll",
]


def make_provider(
    config: Mapping[str, Any] | None,
    *,
    provider: str | None = None,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> Provider:
    """Build the provider that modelctl.yaml (`metrics:`, `analysis:`) and --provider/--url describe."""
    config = config if isinstance(config, Mapping) else {}
    section = config.get("metrics") or {}
    raise_first(metrics_rules(section))  # a loaded Config has passed them; a plain mapping may not
    counters, stale_seconds = _analysis_needs(config)
    name = provider or section.get("provider") or "http-json"
    if name not in PROVIDERS:
        raise UsageError(f"unknown metrics provider {name!r}", hint=f"use one of: {', '.join(sorted(PROVIDERS))}")
    # the configured url belongs to the configured provider; --provider alone falls back to its default
    same_provider = provider is None or provider == section.get("provider", "http-json")
    configured_url = section.get("url") if same_provider else None
    target = url or configured_url or DEFAULT_URLS[name]
    limits = _limits(section)
    token = _token(section.get("token_env"), os.environ if env is None else env)
    _check_url(target, token)
    if name == "prometheus":
        queries = section.get("queries") or DEFAULT_QUERIES
        return PrometheusProvider(target, queries, limits=limits, token=token, stale_seconds=stale_seconds,
                                  clock=clock, monotonic=monotonic, counters=counters)
    return HttpJsonProvider(target, limits=limits, token=token, stale_seconds=stale_seconds, clock=clock,
                            monotonic=monotonic, counters=counters)


def _analysis_needs(config: Mapping[str, Any]) -> tuple[frozenset[str], float]:
    """The event counters the configured metrics count, and how old data may be."""
    from ..analysis import AnalysisConfig

    analysis = AnalysisConfig.from_config(config)
    counters = getattr(analysis, "counters", None)
    names = frozenset(counters()) if callable(counters) else frozenset({"errors"})
    return names | {"errors"}, float(getattr(analysis, "stale_seconds", 120))


def take_poll(provider: Provider, model: str, *, control: str | None, canary: str, percent: float | None,
              versions: Sequence[str], since_seconds: float, clock: Callable[[], float] = time.time,
              time_left: float | None = None, canary_id: str | None = None) -> Poll:
    """Read every version once and return the Poll; any failure is the poll's `error`, never an exception."""
    readings: dict[str, Reading] = {}
    error = None
    try:
        readings = provider.read(model, list(versions), since_seconds, time_left=time_left)
    except Exception as exc:  # noqa: BLE001 - a watchdog must outlive any bad answer
        error = " ".join(str(exc).split()) or type(exc).__name__
    return Poll(time=clock(), control=control, canary=canary, percent=percent, readings=readings,
                error=error, model=model, canary_id=canary_id)


def _limits(section: Mapping[str, Any]) -> HttpLimits:
    deadline = section.get("deadline")
    return HttpLimits(timeout=float(section.get("timeout", DEFAULT_TIMEOUT)),
                      deadline=None if deadline is None else float(deadline),
                      max_bytes=int(section.get("max_bytes", DEFAULT_MAX_BYTES)))


def _token(var: Any, env: Mapping[str, str]) -> str | None:
    if var in (None, ""):
        return None
    value = env.get(var)
    if not value:
        raise UsageError(f"metrics.token_env names {var}, which is not set",
                         hint=f"export {var} with the bearer token, or set metrics.token_env: null")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise UsageError(f"the bearer token in {var} contains whitespace or control characters")
    return value


def _check_url(url: str, token: str | None) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise UsageError(f"invalid metrics url {url[:80]!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"metrics url must be http:// or https:// with a host (got {url[:80]!r})")
    if parts.username or parts.password:
        raise UsageError("metrics url must not carry credentials", hint="use metrics.token_env for a bearer token")
    if token and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise UsageError(f"refusing to send the bearer token over plain http to {parts.hostname}",
                         hint="use an https:// metrics url")
