"""modelctl.yaml: strict load, schema validation, defaults (the template documents each one)."""
from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

from . import schema, yamlio
from .errors import ModelctlError, UsageError

CONFIG_FILE = "modelctl.yaml"

# watch's judgement defaults (analysis.py reads them), tuned with benchmarks/judgement.py
# (README "How watch judges")
ANALYSIS_METRICS: dict = {
    "error_rate": {"type": "rate", "events": "errors", "max_ratio": 1.5, "min_delta": 0.005,
                   "action": "rollback", "critical": True},
    "latency": {"type": "latency", "quantile": 0.95, "max_ratio": 1.5, "min_delta": 0.01, "action": "rollback"},
    "cost_per_request": {"type": "cost", "max_ratio": 1.3, "action": "alert"},
}
ANALYSIS_DEFAULTS: dict = {
    "alpha": 0.01,
    "beta": 0.1,
    "consecutive_failures": 2,
    "consecutive_errors": 5,
    "on_errors": "hold",
    "min_requests": 200,
    "min_events": 20,
    "min_duration_seconds": 600,
    "stale_seconds": 120,
    "srm_alpha": 0.001,
    "srm_tolerance": 0.2,
    "segment_share": 0.5,
    "max_segments": 8,
    "cusum_growth": 1.2,
    "burst_prior": 0.3,
    "burst_prior_weight": 10,
    "max_step": 1.0,
    "prior_requests": 1000,
}

DEFAULTS: dict = {
    "pipeline": {"required": ["staging", "shadow", "canary"]},
    "pinning": {"forbid": ["latest", "default", "*-latest", "*:latest"], "providers": {}},
    "canary": {"steps": [1, 5, 10, 25, 50], "min_step_seconds": 300},
    "shadow": {"budget_per_day": 100.0, "requests_per_day": 100000},
    "analysis": {"interval": 30, **ANALYSIS_DEFAULTS, "metrics": copy.deepcopy(ANALYSIS_METRICS)},
    "metrics": {"provider": "http-json", "url": "http://127.0.0.1:9108/metrics/{model}", "token_env": None,
                "timeout": 5, "max_bytes": 1048576, "queries": {}},
    "gate": {"required": False, "alpha": 0.05, "metrics": {}},
    "deprecation": {"warn_days": 30},
    "remote": {"name": "origin", "branch": "main", "push": False, "deadline": 30},
    # off for registries made before it existed; the template turns it on (README "GitOps")
    "render": {"enabled": False, "dir": "rendered", "namespace": None},
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


def all_problems(doc: yamlio.Document) -> list[str]:
    """Everything wrong with a modelctl.yaml: its schema, then the rules below."""
    return schema.problems(doc, "Registry", (problems,))


def problems(doc: yamlio.Document) -> list[str]:
    """Rules of modelctl.yaml beyond its schema (run after it), as 'file:line: field: message'.

    Everything a write or `watch` would trip over later is found here, so `check` reports it and
    every command refuses the file up front instead of crashing half-way.
    """
    from .secrets import shown

    out = []
    providers = (doc.data.get("pinning") or {}).get("providers") or {}
    for provider, rule in providers.items():
        try:
            re.compile(rule)
        except (re.error, RecursionError, OverflowError) as exc:
            line = doc.line_of(("pinning", "providers", provider)) or 1
            reason = getattr(exc, "msg", None) or type(exc).__name__
            out.append(f"{doc.path}:{line}: pinning.providers.{provider}: {shown(rule)} is not a valid regular "
                       f"expression ({reason}); write one such as '^.+-\\d{{4}}-\\d{{2}}-\\d{{2}}$'")
    render_dir = (doc.data.get("render") or {}).get("dir")
    if isinstance(render_dir, str) and render_dir.split("/", 1)[0] in _RESERVED_DIRS:
        line = doc.line_of(("render", "dir")) or 1
        out.append(f"{doc.path}:{line}: render.dir: {render_dir!r} is inside a directory modelctl reads "
                   f"({render_dir.split('/', 1)[0]}/); use a directory of its own such as 'rendered'")
    return out


# Directories whose files modelctl reads as registry files: rendered manifests may not live there.
_RESERVED_DIRS = frozenset({"bundles", "deployments", "evals", "prompts"})


def metrics_url_warning(before: bytes | str | None, after: bytes | str | None) -> tuple[int, str] | None:
    """(line, message) when a change points metrics.url or metrics.token_env somewhere new.

    `watch` sends the bearer token from metrics.token_env to metrics.url: a pull request that
    changes either deserves a reviewer's second look (check --changed-since shows this warning).
    """
    if before is None or after is None:
        return None
    try:
        old, new = parse(before), parse(after)
        doc = yamlio.loads(after, CONFIG_FILE)
    except UsageError:
        return None  # an invalid file is reported as an error elsewhere
    was, now = old["metrics"], new["metrics"]
    if was.get("url") == now.get("url") and was.get("token_env") == now.get("token_env"):
        return None
    from .secrets import shown

    changed = "url" if was.get("url") != now.get("url") else "token_env"
    line = doc.line_of(("metrics", changed)) or doc.line_of(("metrics",)) or 1
    token = f" with the token from {now['token_env']}" if now.get("token_env") else ""
    return line, (f"metrics.{changed} changes from {shown(was.get(changed), 100)} to {shown(now.get(changed), 100)}: "
                  f"watch will query {shown(now.get('url'), 100)}{token}; make sure that host is yours "
                  "before merging")


def parse(text: bytes | str, path: str = CONFIG_FILE, store=None) -> dict:
    """Validate modelctl.yaml content and return it merged over the defaults.

    With a `store`, content already found valid in that clone is not validated again (schema.ValidCache,
    keyed by the content's hash): most commands then never import jsonschema.
    """
    doc = yamlio.loads(text, path)
    if store is None:
        return _merge(DEFAULTS, schema.validate(doc, "Registry", (problems,)))
    import hashlib

    raw = text.encode("utf-8") if isinstance(text, str) else text
    cache = schema.ValidCache(store, "Registry", (problems,))
    data = cache.validate(doc, hashlib.sha256(raw).hexdigest())
    cache.save()
    return _merge(DEFAULTS, data)


class UncommittedNote(UserWarning):
    """A file modelctl reads from git differs in the work tree: the committed version is used."""


def uncommitted(snapshot, path: str) -> bool:
    """Whether the work tree's copy of `path` has changes that are not in the snapshot's commit."""
    store = getattr(snapshot, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        return False
    try:
        here = (Path(root) / path).read_bytes()
    except OSError:
        return False
    committed = snapshot.read(path)
    if here == committed:  # the common case costs one file read, no git process
        return False
    return committed is None or bool(store.dirty([path]))


def read_committed(snapshot, path: str, parse_fn):
    """parse_fn(committed bytes), saying so when the work tree's copy differs: a note (UncommittedNote
    warning) on success, the error extended on failure, since it is about a file the user is not looking at."""
    dirty = uncommitted(snapshot, path)
    try:
        value = parse_fn(snapshot.read(path))
    except ModelctlError as exc:
        if dirty:
            exc.message = f"{exc.message} (in the committed {path}; yours has uncommitted changes: commit them)"
        raise
    if dirty:
        warnings.warn(f"{path} has uncommitted changes; using the committed version (commit it first)",
                      UncommittedNote, stacklevel=2)
    return value


def load(snapshot) -> dict:
    """The registry config at a snapshot; a registry without modelctl.yaml is refused."""
    if snapshot.read(CONFIG_FILE) is None:
        raise UsageError("this is not a modelctl registry (no modelctl.yaml at HEAD)",
                         hint="run 'modelctl init' or pass --registry DIR")
    store = getattr(snapshot, "store", None)
    return read_committed(snapshot, CONFIG_FILE, lambda text: parse(text, store=store))
