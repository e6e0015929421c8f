"""modelctl.yaml: strict load, schema validation, defaults (the template documents each one), and
the one typed, frozen `Config` every other module reads it through.

Every rule of the file lives here: the schema (schemas/registry.schema.json) and `problems` below.
What passes both is turned once into a `Config`; readers use its attributes and never re-check.
"""
from __future__ import annotations

import copy
import math
import re
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from . import schema, yamlio
from .errors import ModelctlError, UsageError

CONFIG_FILE = "modelctl.yaml"

# watch's judgement defaults (analysis.py reads them), tuned with benchmarks/judgement.py
# (README "How watch judges")
ANALYSIS_METRICS: dict[str, dict[str, Any]] = {
    "error_rate": {"type": "rate", "events": "errors", "max_ratio": 1.5, "min_delta": 0.005,
                   "action": "rollback", "critical": True},
    "latency": {"type": "latency", "quantile": 0.95, "max_ratio": 1.5, "min_delta": 0.01, "action": "rollback"},
    "cost_per_request": {"type": "cost", "max_ratio": 1.3, "action": "alert"},
}
ANALYSIS_DEFAULTS: dict[str, Any] = {
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

DEFAULTS: dict[str, dict[str, Any]] = {
    "pipeline": {"required": ["staging", "shadow", "canary"]},
    "pinning": {"forbid": ["latest", "default", "*-latest", "*:latest"], "providers": {}},
    "canary": {"steps": [1, 5, 10, 25, 50], "min_step_seconds": 300},
    "shadow": {"budget_per_day": 100.0, "requests_per_day": 100000},
    "analysis": {"interval": 30, **ANALYSIS_DEFAULTS, "metrics": copy.deepcopy(ANALYSIS_METRICS)},
    "metrics": {"provider": "http-json", "url": "http://127.0.0.1:9108/metrics/{model}", "token_env": None,
                "timeout": 5, "max_bytes": 1048576, "queries": {}},
    "gate": {"required": False, "alpha": 0.05, "metrics": {}},
    "deprecation": {"warn_days": 90},
    "signing": {"enabled": False},
    "notifications": {"timeout": 5, "deadline": 30, "retries": 3, "webhooks": []},
    "remote": {"name": "origin", "branch": "main", "push": False, "deadline": 30},
    # off for registries made before it existed; the template turns it on (README "GitOps")
    "render": {"enabled": False, "dir": "rendered", "namespace": None},
    # `modelctl gc` and rollback's cold-standby warning (README "Retention")
    "retention": {"keep_deprecated": 3, "hot_standby_hours": 72},
    # what bundles' `compatibility:` needs are checked against (modelctl.compat)
    "platform": {"embedding": None, "api_versions": [], "accepts_breaking": [], "routes": {}},
    "segments": {"attributes": [], "rules": {}},
}

# Sections whose user value replaces the default whole instead of merging key by key.
_REPLACE = {("analysis", "metrics"), ("gate", "metrics"), ("metrics", "queries"), ("pinning", "providers"),
            ("platform", "embedding"), ("platform", "routes"), ("segments", "rules")}


def _merge(base: Mapping[str, Any], override: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path + (key,) not in _REPLACE:
            out[key] = _merge(out[key], value, path + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


T = TypeVar("T")


# config sits below the store (the pure core reads its defaults), so it names what it uses of
# store.Store and store.Snapshot instead of importing them
class Store(Protocol):
    """The clone a snapshot belongs to (store.Store)."""

    @property
    def root(self) -> Path: ...

    def dirty(self, paths: list[str]) -> list[str]: ...

    def private_path(self, name: str) -> Path: ...


class Snapshot(Protocol):
    """The registry at one commit (store.Snapshot)."""

    @property
    def store(self) -> Store: ...

    def read(self, path: str) -> bytes | None: ...


def _freeze(value: Any) -> Any:
    """A read-only copy of parsed YAML: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Plain YAML data again (dicts and lists) from what _freeze built: a fresh copy the caller may change."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class _Section:
    """A section of modelctl.yaml as typed, frozen fields."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The section as plain YAML data (a fresh copy), for the pure modules that take a mapping."""
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]  # subclasses are dataclasses


@dataclass(frozen=True, slots=True)
class RemoteConfig(_Section):
    """`remote:` where writes land: the remote, its base branch, push or not, how long to retry a push."""

    name: str
    branch: str
    push: bool
    deadline: float


@dataclass(frozen=True, slots=True)
class PinningConfig(_Section):
    """`pinning:` model-id patterns refused as floating aliases, and per-provider snapshot regexes."""

    forbid: tuple[str, ...]
    providers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PipelineConfig(_Section):
    """`pipeline:` the stages a version must pass before active."""

    required: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CanaryConfig(_Section):
    """`canary:` the allowed percents and the least time between two steps."""

    steps: tuple[float, ...]
    min_step_seconds: float


@dataclass(frozen=True, slots=True)
class ShadowConfig(_Section):
    """`shadow:` the daily budget mirrored traffic is costed against."""

    budget_per_day: float
    requests_per_day: float


@dataclass(frozen=True, slots=True)
class AnalysisSection:
    """`analysis:` how watch judges. `interval` is typed here; the judgement settings are the
    section itself (`settings`), which analysis.AnalysisConfig turns into its own typed form."""

    interval: float | str
    settings: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The whole section as plain YAML data (a fresh copy), as AnalysisConfig.from_section takes it."""
        out: dict[str, Any] = _thaw(self.settings)
        return out


@dataclass(frozen=True, slots=True)
class MetricsConfig(_Section):
    """`metrics:` where watch reads its numbers."""

    provider: str
    url: str
    token_env: str | None
    timeout: float
    max_bytes: int
    queries: Mapping[str, str]
    deadline: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The section as written (`deadline` only when set), for metrics.make_provider."""
        out = _Section.as_dict(self)
        if self.deadline is None:
            del out["deadline"]
        return out


@dataclass(frozen=True, slots=True)
class GateConfig(_Section):
    """`gate:` whether canary/active need a passing eval gate, its alpha and its per-metric rules."""

    required: bool
    alpha: float
    metrics: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class DeprecationConfig(_Section):
    """`deprecation:` how many days ahead of a model's retirement `check` warns (and `deprecations` says to
    start evaluating its replacement)."""

    warn_days: int


@dataclass(frozen=True, slots=True)
class SigningConfig(_Section):
    """`signing:` whether every commit and tag modelctl makes is signed (the key and format are git's own:
    user.signingkey, gpg.format)."""

    enabled: bool


@dataclass(frozen=True, slots=True)
class RenderConfig(_Section):
    """`render:` the Kubernetes ConfigMaps every write renders into `dir` (modelctl.manifests)."""

    enabled: bool
    dir: str
    namespace: str | None


@dataclass(frozen=True, slots=True)
class NotificationsConfig(_Section):
    """`notifications:` webhooks watch tells of its decisions (modelctl.notify reads URLs and tokens
    from the environment when watch starts)."""

    timeout: float
    deadline: float
    retries: int
    webhooks: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class RetentionConfig(_Section):
    """`retention:` how many deprecated versions `gc` keeps warm for rollback, and how long after
    the deployment it would undo a rollback target counts as a hot standby."""

    keep_deprecated: int
    hot_standby_hours: float


@dataclass(frozen=True, slots=True)
class PlatformConfig(_Section):
    """`platform:` what serving provides, for bundles' `compatibility:` needs (modelctl.compat):
    the embedding index, the client API versions served, the breaking changes callers accept, and
    per route what differs."""

    embedding: Mapping[str, str] | None
    api_versions: tuple[str, ...]
    accepts_breaking: tuple[str, ...]
    routes: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class SegmentsConfig(_Section):
    """`segments:` the caller attributes requests carry and the named rules a canary may be limited to
    (modelctl.segments; README "Routes and segments")."""

    attributes: tuple[str, ...]
    rules: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Config:
    """modelctl.yaml after schema validation and defaults: typed, and immutable all the way down."""

    remote: RemoteConfig
    pinning: PinningConfig
    pipeline: PipelineConfig
    canary: CanaryConfig
    shadow: ShadowConfig
    analysis: AnalysisSection
    metrics: MetricsConfig
    gate: GateConfig
    deprecation: DeprecationConfig
    notifications: NotificationsConfig
    render: RenderConfig
    retention: RetentionConfig
    platform: PlatformConfig
    signing: SigningConfig = SigningConfig(enabled=False)
    segments: SegmentsConfig = SegmentsConfig(attributes=(), rules=MappingProxyType({}))

    def as_dict(self) -> dict[str, Any]:
        """The effective document as plain YAML data (a fresh copy), for the pure modules whose
        functions take the document (state's lifecycle rules, metrics.make_provider)."""
        return {f.name: getattr(self, f.name).as_dict() for f in fields(self)}


def build(data: Mapping[str, Any]) -> Config:
    """The Config of a document that passed the schema and `problems` (defaults merged here)."""
    doc = _merge(DEFAULTS, data)
    remote, pinning, canary, shadow = doc["remote"], doc["pinning"], doc["canary"], doc["shadow"]
    analysis, metrics, gate = doc["analysis"], doc["metrics"], doc["gate"]
    return Config(
        remote=RemoteConfig(name=remote["name"], branch=remote["branch"], push=remote["push"],
                            deadline=remote["deadline"]),
        pinning=PinningConfig(forbid=tuple(pinning["forbid"]), providers=_freeze(pinning["providers"])),
        pipeline=PipelineConfig(required=tuple(doc["pipeline"]["required"])),
        canary=CanaryConfig(steps=tuple(canary["steps"]), min_step_seconds=canary["min_step_seconds"]),
        shadow=ShadowConfig(budget_per_day=shadow["budget_per_day"], requests_per_day=shadow["requests_per_day"]),
        analysis=AnalysisSection(interval=analysis["interval"], settings=_freeze(analysis)),
        metrics=MetricsConfig(provider=metrics["provider"], url=metrics["url"], token_env=metrics["token_env"],
                              timeout=metrics["timeout"], max_bytes=metrics["max_bytes"],
                              queries=_freeze(metrics["queries"]), deadline=metrics.get("deadline")),
        gate=GateConfig(required=gate["required"], alpha=gate["alpha"], metrics=_freeze(gate["metrics"])),
        deprecation=DeprecationConfig(warn_days=doc["deprecation"]["warn_days"]),
        notifications=NotificationsConfig(timeout=doc["notifications"]["timeout"],
                                          deadline=doc["notifications"]["deadline"],
                                          retries=doc["notifications"]["retries"],
                                          webhooks=_freeze(doc["notifications"]["webhooks"])),
        render=RenderConfig(enabled=doc["render"]["enabled"], dir=doc["render"]["dir"],
                            namespace=doc["render"]["namespace"]),
        retention=RetentionConfig(keep_deprecated=doc["retention"]["keep_deprecated"],
                                  hot_standby_hours=doc["retention"]["hot_standby_hours"]),
        platform=PlatformConfig(embedding=_freeze(doc["platform"]["embedding"]),
                                api_versions=tuple(str(v) for v in doc["platform"]["api_versions"]),
                                accepts_breaking=tuple(doc["platform"]["accepts_breaking"]),
                                routes=_freeze(doc["platform"]["routes"])),
        signing=SigningConfig(enabled=doc["signing"]["enabled"]),
        segments=SegmentsConfig(attributes=tuple(doc["segments"]["attributes"]),
                                rules=_freeze(doc["segments"]["rules"])),
    )


def defaults() -> Config:
    """The Config of a modelctl.yaml that sets nothing (what `check` judges by when the file is broken)."""
    return build({})


def all_problems(doc: yamlio.Document) -> list[str]:
    """Everything wrong with a modelctl.yaml: its schema, then the rules below."""
    return schema.problems(doc, "Registry", (problems,))


def problems(doc: yamlio.Document) -> list[str]:
    """Rules of modelctl.yaml beyond its schema (run after it), as 'file:line: field: message'.

    Everything a write or `watch` would trip over later is found here, so `check` reports it and
    every command refuses the file up front instead of crashing half-way.
    """
    from .secrets import shown

    out: list[str] = []
    providers = (doc.data.get("pinning") or {}).get("providers") or {}
    for provider, rule in providers.items():
        try:
            re.compile(rule)
        except (re.error, RecursionError, OverflowError) as exc:
            line = doc.line_of(("pinning", "providers", provider)) or 1
            reason = getattr(exc, "msg", None) or type(exc).__name__
            out.append(f"{doc.path}:{line}: pinning.providers.{provider}: {shown(rule)} is not a valid regular "
                       f"expression ({reason}); write one such as '^.+-\\d{{4}}-\\d{{2}}-\\d{{2}}$'")
    for rule, key in ((analysis_rules, "analysis"), (gate_rules, "gate")):
        for found in rule(doc.data.get(key)):
            line = doc.line_of(found.path) or 1
            hint = f"; {found.hint}" if found.hint else ""
            out.append(f"{doc.path}:{line}: {found.message}{hint}")
    from .segments import problems as segment_problems

    for where, message in segment_problems(doc.data.get("segments") or {}):
        out.append(f"{doc.path}:{doc.line_of(where) or doc.line_of(where[:-1]) or 1}: {'.'.join(where)}: {message}")
    render_dir = (doc.data.get("render") or {}).get("dir")
    if isinstance(render_dir, str) and render_dir.split("/", 1)[0] in _RESERVED_DIRS:
        line = doc.line_of(("render", "dir")) or 1
        out.append(f"{doc.path}:{line}: render.dir: {render_dir!r} is inside a directory modelctl reads "
                   f"({render_dir.split('/', 1)[0]}/); use a directory of its own such as 'rendered'")
    return out


# Directories whose files modelctl reads as registry files: rendered manifests may not live there.
_RESERVED_DIRS = frozenset({"bundles", "deployments", "evals", "prompts"})


# --------------------------------------------------------------------------- rules beyond the schema
#
# The sections other modules interpret (analysis, gate, metrics) have rules JSON Schema cannot say
# (one of three keys, a rule that tolerates nothing, a gauge that would roll back). They live here,
# once: `problems` reports them with a line number for `check` and every command that loads the
# file; the pure modules that also accept a plain mapping (analysis.AnalysisConfig.from_section,
# gate.parse_rules, metrics.make_provider) run the same functions on it and raise the first.
# They check types too, since a plain mapping has not been through the schema.


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken rule: where (keys from the document root) and a sentence that names the field."""

    path: tuple[str, ...]
    message: str
    hint: str | None = None


def raise_first(findings: list[Finding]) -> None:
    """Raise the first finding as a one-line ValidationError (for callers given a plain mapping)."""
    if findings:
        from .errors import ValidationError

        raise ValidationError(f"{CONFIG_FILE}: {findings[0].message}", hint=findings[0].hint)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


ANALYSIS_KINDS = ("rate", "latency", "cost", "gauge")
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_METRIC_KEYS = ("type", "max_ratio", "min_delta", "action", "critical", "events", "numerator", "quantile",
                "threshold_ms", "gauge", "min_requests")
_UNIT, _WHOLE1 = "a number between 0 and 1", "a whole number >= 1"
# analysis setting -> (test, what it must be)
_ANALYSIS_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "alpha": (lambda x: 0 < x < 1, _UNIT),
    "beta": (lambda x: 0 < x < 1, _UNIT),
    "consecutive_failures": (lambda x: x >= 1 and x == int(x), _WHOLE1),
    "consecutive_errors": (lambda x: x >= 1 and x == int(x), _WHOLE1),
    "min_requests": (lambda x: x >= 0 and x == int(x), "a whole number >= 0"),
    "min_events": (lambda x: x >= 0 and x == int(x), "a whole number >= 0"),
    "min_duration_seconds": (lambda x: x >= 0, "seconds >= 0"),
    "stale_seconds": (lambda x: x > 0, "a number of seconds > 0"),
    "srm_alpha": (lambda x: 0 < x < 1, _UNIT),
    "srm_tolerance": (lambda x: 0 <= x < 1, "a number in [0, 1)"),
    "segment_share": (lambda x: 0 < x < 1, _UNIT),
    "max_segments": (lambda x: x >= 1 and x == int(x), _WHOLE1),
    "cusum_growth": (lambda x: x >= 0, "a number >= 0"),
    "burst_prior": (lambda x: x >= 0, "a number >= 0"),
    "burst_prior_weight": (lambda x: x >= 0, "a number >= 0"),
    "max_step": (lambda x: x > 0, "a number > 0"),
    "prior_requests": (lambda x: x >= 0, "a number >= 0"),
}


def default_events(metric: str) -> str:
    """The counter behind a rate metric by convention: error_rate -> errors, x_rate -> xs."""
    if metric == "error_rate":
        return "errors"
    if metric.endswith("_rate"):
        return metric[: -len("_rate")] + "s"
    return metric


def metric_settings(name: str, raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """One `analysis.metrics` entry merged over its defaults (what the rules and the judgement read)."""
    return {**ANALYSIS_METRICS.get(name, {}), **(raw or {})}


def analysis_rules(section: Any) -> list[Finding]:
    """What is wrong with an `analysis:` section (plain data), beyond and including its schema."""
    if section is None:
        return []
    if not isinstance(section, Mapping):
        return [Finding(("analysis",), "analysis must be a mapping")]
    out: list[Finding] = []
    known = set(ANALYSIS_DEFAULTS) | {"interval", "metrics", "segments"}
    for key in section:
        if key not in known:
            out.append(Finding(("analysis", str(key)), f"analysis.{key} is not a setting",
                               f"known: {', '.join(sorted(ANALYSIS_DEFAULTS))}, metrics, segments"))
    for key, (ok, want) in _ANALYSIS_RANGES.items():
        if key in section and not (_number(section[key]) and ok(section[key])):
            out.append(Finding(("analysis", key), f"analysis.{key} must be {want} (got {_short(section[key])})"))
    if section.get("on_errors", "hold") not in ("hold", "rollback"):
        out.append(Finding(("analysis", "on_errors"),
                           f"analysis.on_errors must be hold or rollback (got {_short(section['on_errors'])})"))
    segments = section.get("segments")
    if segments is not None and (not isinstance(segments, list) or not all(isinstance(x, str) and x for x in segments)):
        out.append(Finding(("analysis", "segments"), "analysis.segments must be a list of segment names"))
    metrics = section.get("metrics")
    if metrics is None:
        return out
    if not isinstance(metrics, Mapping):
        return out + [Finding(("analysis", "metrics"),
                              "analysis.metrics must be a mapping of metric name to settings")]
    if not metrics:
        out.append(Finding(("analysis", "metrics"), "analysis.metrics is empty; watch would have nothing to judge",
                           "remove the key to use the defaults"))
    for name, raw in metrics.items():
        out.extend(_metric_rules(str(name), raw))
    return out


def _metric_rules(name: str, raw: Any) -> list[Finding]:
    at, where = ("analysis", "metrics", name), f"analysis.metrics.{name}"
    if not _METRIC_NAME.match(name):
        return [Finding(at, f"analysis.metrics has an invalid metric name {name!r}", "use letters, digits and '_'")]
    if raw is not None and not isinstance(raw, Mapping):
        return [Finding(at, f"{where} must be a mapping")]
    unknown = sorted(str(k) for k in (raw or {}) if k not in _METRIC_KEYS)
    if unknown:
        return [Finding(at + (unknown[0],), f"{where}.{unknown[0]} is not a metric setting",
                        f"known: {', '.join(_METRIC_KEYS)}")]
    m = metric_settings(name, raw)
    kind = "gauge" if m.get("type") == "ratio" else m.get("type")  # `ratio`: the old name of a gauge
    if kind not in ANALYSIS_KINDS:
        return [Finding(at + ("type",), f"{where}.type must be one of {', '.join(ANALYSIS_KINDS)} (got {kind!r})")]
    out: list[Finding] = []

    def bad(key: str, message: str, hint: str | None = None) -> None:
        out.append(Finding(at + (key,), message, hint))

    max_ratio, min_delta = m.get("max_ratio", 1.5), m.get("min_delta", 0.0)
    if not (_number(max_ratio) and max_ratio >= 1):
        bad("max_ratio", f"{where}.max_ratio must be a number >= 1 (got {_short(max_ratio)})")
    elif not (_number(min_delta) and 0 <= min_delta < 1):
        bad("min_delta", f"{where}.min_delta must be a number in [0, 1) (got {_short(min_delta)})")
    elif kind in ("rate", "latency") and max_ratio == 1 and min_delta == 0:
        bad("max_ratio", f"{where} tolerates nothing: max_ratio 1 and min_delta 0",
            "set max_ratio above 1 or min_delta above 0")
    elif kind == "cost" and max_ratio == 1:
        bad("max_ratio", f"{where} tolerates nothing: max_ratio 1", "set max_ratio above 1")
    action = m.get("action", "rollback")
    if action not in ("rollback", "alert"):
        bad("action", f"{where}.action must be rollback or alert (got {_short(action)})")
    elif kind == "gauge" and action == "rollback" and "action" in (raw or {}):
        bad("action", f"{where}: a gauge can alert but never roll back",
            "use type: latency with histogram buckets, or action: alert")
    if not isinstance(m.get("critical", False), bool):
        bad("critical", f"{where}.critical must be true or false (got {_short(m['critical'])})")
    events = m.get("events", m.get("numerator"))
    if kind == "rate" and events is not None and not (isinstance(events, str) and _METRIC_NAME.match(events)):
        bad("events", f"{where}.events must be a counter name (got {_short(events)})")
    quantile = m.get("quantile", 0.95)
    if not (_number(quantile) and 0 < quantile < 1):
        bad("quantile", f"{where}.quantile must be a number between 0 and 1 (got {_short(quantile)})")
    threshold = m.get("threshold_ms")
    if threshold is not None and not (_number(threshold) and threshold > 0):
        bad("threshold_ms", f"{where}.threshold_ms must be a number of milliseconds > 0 (got {_short(threshold)})")
    gauge = m.get("gauge")
    if gauge is not None and not (isinstance(gauge, str) and _METRIC_NAME.match(gauge)):
        bad("gauge", f"{where}.gauge must be a gauge name (got {_short(gauge)})")
    least = m.get("min_requests")
    if least is not None and not (_number(least) and least >= 0 and least == int(least)):
        bad("min_requests", f"{where}.min_requests must be a whole number >= 0 (got {_short(least)})")
    return out


GATE_RULE_KINDS = ("max_drop", "max_rise", "max_ratio")
GATE_DEFAULT_BETTER = {"max_drop": "higher", "max_rise": "lower"}


def gate_rules(section: Any) -> list[Finding]:
    """What is wrong with a `gate:` section (plain data), beyond and including its schema."""
    if section is None:
        return []
    if not isinstance(section, Mapping):
        return [Finding(("gate",), "gate: expected a mapping")]
    out: list[Finding] = []
    alpha = section.get("alpha", 0.05)
    if not (_number(alpha) and 0 < alpha < 1):
        out.append(Finding(("gate", "alpha"), f"gate.alpha: expected a number between 0 and 1, got {alpha!r}",
                           "0.05 is the usual choice"))
    metrics = section.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        return out + [Finding(("gate", "metrics"), "gate.metrics: expected a mapping of metric -> rule")]
    for name, spec in metrics.items():
        found = _gate_rule(str(name), spec)
        if found:
            out.append(found)
    return out


def _gate_rule(name: str, spec: Any) -> Finding | None:
    at, where = ("gate", "metrics", name), f"gate.metrics.{name}"
    if not isinstance(spec, Mapping):
        return Finding(at, f"{where}: expected a mapping such as {{better: higher, max_drop: 0.01}}")
    unknown = sorted(str(k) for k in spec if k not in GATE_RULE_KINDS and k not in ("better", "required"))
    if unknown:
        return Finding(at + (unknown[0],), f"{where}: unknown key {unknown[0]!r}",
                       "use better, required and one of max_drop, max_rise, max_ratio")
    kinds = [k for k in GATE_RULE_KINDS if k in spec]
    if len(kinds) != 1:
        return Finding(at, f"{where}: give exactly one of max_drop, max_rise, max_ratio")
    kind = kinds[0]
    better = spec.get("better", GATE_DEFAULT_BETTER.get(kind))
    if better not in ("higher", "lower"):
        return Finding(at + ("better",), f"{where}.better: expected higher or lower, got {better!r}")
    if (kind, better) in (("max_drop", "lower"), ("max_rise", "higher")):
        return Finding(at + (kind,), f"{where}: {kind} does not fit better: {better}",
                       f"use {'max_rise' if better == 'lower' else 'max_drop'}")
    amount = spec[kind]
    if not (_number(amount) and amount >= 0):
        return Finding(at + (kind,), f"{where}.{kind}: expected a number >= 0, got {amount!r}")
    if kind == "max_ratio" and (amount == 0 or (better == "lower" and amount < 1)):
        return Finding(at + (kind,), f"{where}.max_ratio: expected a ratio > 0, and >= 1 with better: lower (how "
                       f"many times the baseline is allowed), got {amount!r}", "for up to 20% worse use 1.2")
    if not isinstance(spec.get("required", True), bool):
        return Finding(at + ("required",), f"{where}.required: expected true or false, got {spec['required']!r}")
    return None


def metrics_rules(section: Any) -> list[Finding]:
    """What is wrong with a `metrics:` section (plain data) that its schema also says: for callers
    that hand metrics.make_provider a plain mapping."""
    if section is None:
        return []
    if not isinstance(section, Mapping):
        return [Finding(("metrics",), "metrics must be a mapping")]
    out: list[Finding] = []
    for key in ("timeout", "deadline"):
        value = section.get(key)
        if value is not None and not (_number(value) and value > 0):
            out.append(Finding(("metrics", key), f"metrics.{key} must be a number of seconds > 0 (got {value!r})"))
    max_bytes = section.get("max_bytes", 1)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        out.append(Finding(("metrics", "max_bytes"), f"metrics.max_bytes must be a whole number > 0 (got {max_bytes!r})"))
    var = section.get("token_env")
    if var not in (None, "") and not isinstance(var, str):
        out.append(Finding(("metrics", "token_env"), "metrics.token_env must be the name of an environment variable"))
    queries = section.get("queries")
    if queries is not None and (not isinstance(queries, Mapping) or not all(isinstance(q, str) for q in queries.values())):
        out.append(Finding(("metrics", "queries"), "metrics.queries must map quantity names to PromQL strings"))
    return out


def metrics_url_warning(before: bytes | str | None, after: bytes | str | None) -> tuple[int, str] | None:
    """(line, message) when a change points metrics.url or metrics.token_env somewhere new.

    `watch` sends the bearer token from metrics.token_env to metrics.url: a pull request that
    changes either deserves a reviewer's second look (check --changed-since shows this warning).
    """
    if before is None or after is None:
        return None
    try:
        old = parse(before)
        doc = yamlio.loads(after, CONFIG_FILE)
        new = build(schema.validate(doc, "Registry", (problems,)))
    except UsageError:
        return None  # an invalid file is reported as an error elsewhere
    was, now = old.metrics, new.metrics
    if was.url == now.url and was.token_env == now.token_env:
        return None
    from .secrets import shown

    changed = "url" if was.url != now.url else "token_env"
    line = doc.line_of(("metrics", changed)) or doc.line_of(("metrics",)) or 1
    token = f" with the token from {now.token_env}" if now.token_env else ""
    return line, (f"metrics.{changed} changes from {shown(getattr(was, changed), 100)} to "
                  f"{shown(getattr(now, changed), 100)}: watch will query {shown(now.url, 100)}{token}; make sure "
                  "that host is yours before merging")


def parse(text: bytes | str, path: str = CONFIG_FILE, store: Store | None = None) -> Config:
    """Validate modelctl.yaml content and return it, merged over the defaults, as a frozen Config.

    With a `store`, content already found valid in that clone is not validated again (schema.ValidCache,
    keyed by the content's hash): most commands then never import jsonschema. The same content is
    also parsed only once per store: a write reads modelctl.yaml at HEAD for its remote settings and
    again at the tip it extends, usually the same bytes.
    """
    if store is None:
        return build(schema.validate(yamlio.loads(text, path), "Registry", (problems,)))
    raw = text.encode("utf-8") if isinstance(text, str) else text
    seen = _PARSED.get(store)
    if seen is not None and seen[0] == raw and seen[1] == path:
        return seen[2]
    import hashlib

    doc = yamlio.loads(raw, path)
    cache = schema.ValidCache(store, "Registry", (problems,))
    data = cache.validate(doc, hashlib.sha256(raw).hexdigest())
    cache.save()
    config = build(data)
    _PARSED[store] = (raw, path, config)
    return config


# store -> (content, path, Config) of the last modelctl.yaml parsed for it (a Config is immutable, so
# sharing it between the reads of one operation is safe)
_PARSED: weakref.WeakKeyDictionary[Store, tuple[bytes, str, Config]] = weakref.WeakKeyDictionary()


class UncommittedNote(UserWarning):
    """A file modelctl reads from git differs in the work tree: the committed version is used."""


def uncommitted(snapshot: Snapshot, path: str) -> bool:
    """Whether the work tree's copy of `path` has changes that are not in the snapshot's commit."""
    store = getattr(snapshot, "store", None)
    root = getattr(store, "root", None)
    if store is None or root is None:
        return False
    try:
        here = (Path(root) / path).read_bytes()
    except OSError:
        return False
    committed = snapshot.read(path)
    if here == committed:  # the common case costs one file read, no git process
        return False
    return committed is None or bool(store.dirty([path]))


def read_committed(snapshot: Snapshot, path: str, parse_fn: Callable[[bytes | None], T]) -> T:
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


def load(snapshot: Snapshot) -> Config:
    """The registry config at a snapshot; a registry without modelctl.yaml is refused."""
    if snapshot.read(CONFIG_FILE) is None:
        raise UsageError("this is not a modelctl registry (no modelctl.yaml at HEAD)",
                         hint="run 'modelctl init' or pass --registry DIR")
    store = getattr(snapshot, "store", None)
    return read_committed(snapshot, CONFIG_FILE, lambda text: parse(text or b"", store=store))
