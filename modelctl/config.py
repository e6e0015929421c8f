"""modelctl.yaml: strict load, schema validation, defaults (the template documents each one)."""
from __future__ import annotations

import copy

from . import schema, yamlio
from .errors import UsageError

CONFIG_FILE = "modelctl.yaml"

DEFAULTS: dict = {
    "pipeline": {"required": ["staging", "shadow", "canary"]},
    "pinning": {"forbid": ["latest", "default", "*-latest", "*:latest"], "providers": {}},
    "canary": {"steps": [1, 5, 10, 25, 50], "min_step_seconds": 300},
    "shadow": {"budget_per_day": 100.0, "requests_per_day": 100000},
    "analysis": {
        "interval": 30, "alpha": 0.01, "beta": 0.2, "consecutive_failures": 2, "consecutive_errors": 5,
        "on_errors": "hold", "min_requests": 200, "stale_seconds": 120,
        "metrics": {
            "error_rate": {"type": "rate", "events": "errors", "max_ratio": 1.5, "min_delta": 0.005,
                           "action": "rollback", "critical": True},
            "latency": {"type": "latency", "quantile": 0.95, "max_ratio": 1.5, "min_delta": 0.01, "action": "rollback"},
            "cost_per_request": {"type": "cost", "max_ratio": 1.3, "action": "alert"},
        },
    },
    "metrics": {"provider": "http-json", "url": "http://127.0.0.1:9108/metrics/{model}", "token_env": None,
                "timeout": 5, "max_bytes": 1048576, "queries": {}},
    "gate": {"required": False, "alpha": 0.05, "metrics": {}},
    "deprecation": {"warn_days": 30},
    "remote": {"name": "origin", "branch": "main", "push": False, "deadline": 30},
}

# Sections whose user value replaces the default whole instead of merging key by key.
_REPLACE = {("analysis", "metrics"), ("gate", "metrics"), ("metrics", "queries"), ("pinning", "providers")}


def _merge(base: dict, override: dict, path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path + (key,) not in _REPLACE:
            out[key] = _merge(out[key], value, path + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse(text: bytes | str, path: str = CONFIG_FILE) -> dict:
    """Validate modelctl.yaml content and return it merged over the defaults."""
    doc = yamlio.loads(text, path)
    data = schema.validate(doc, "Registry")
    return _merge(DEFAULTS, data)


def load(snapshot) -> dict:
    """The registry config at a snapshot; a registry without modelctl.yaml is refused."""
    raw = snapshot.read(CONFIG_FILE)
    if raw is None:
        raise UsageError("this is not a modelctl registry (no modelctl.yaml at HEAD)",
                         hint="run 'modelctl init' or pass --registry DIR")
    return parse(raw)
