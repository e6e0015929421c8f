"""Check pinned model ids against retirement dates (pure): the dated list shipped with modelctl
(modelctl/data/retirements.yaml: announced provider retirements, each with its source), which the
registry's deprecations.yaml extends and overrides (an entry with the same key replaces the shipped one).

Format of deprecations.yaml (optional, at the registry root):

    apiVersion: modelctl/v1
    kind: Deprecations
    models:
      # provider/id: the retirement date, the first day the provider no longer serves it
      openai/gpt-4-0613: "2026-06-06"
      # or a mapping, to tell people where to go
      anthropic/claude-3-opus-20240229:
        retires: "2026-01-05"
        replacement: anthropic/claude-opus-4-1-20250805
        source: https://docs.anthropic.com/en/docs/resources/model-deprecations
        note: free text
      # a bare id matches that id from any provider; * and ? are wildcards
      "gpt-3.5-turbo-*": "2025-09-30"

Keys are `provider/id` or a bare `id` (also matched as given, so ids that contain '/' work);
dates are `YYYY-MM-DD` (quoted or not). The `models:` wrapper, apiVersion and kind may be left
out: a plain mapping of key -> date is read the same way.

A pin whose retirement date is today or past is an error; one retiring within `warn_days` is a
warning. When several entries match one pin, the earliest retirement wins.

Bundles are immutable, so callers should only check bundles that are on a route (active,
canary, shadow, staging) or being added: an archived bundle pinning a retired model is history.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ValidationError

_META_KEYS = ("apiVersion", "kind")
_ENTRY_KEYS = ("retires", "replacement", "source", "note")
SHIPPED = "retirements.yaml"  # under modelctl/data/


@dataclass(frozen=True)
class Retirement:
    """One entry of deprecations.yaml."""

    pattern: str  # "provider/id", "id", or either with * ? wildcards
    retires: dt.date
    replacement: str | None = None
    note: str | None = None
    source: str | None = None
    origin: str = "deprecations.yaml"  # the file the entry comes from (the shipped list or the registry's)

    def matches(self, provider: str | None, model_id: str) -> bool:
        """True when this entry names the pinned (provider, id)."""
        names = [model_id] + ([f"{provider}/{model_id}"] if provider else [])
        if any(ch in self.pattern for ch in "*?["):
            return any(fnmatch.fnmatchcase(name, self.pattern) for name in names)
        return self.pattern in names


@dataclass(frozen=True)
class Pin:
    """A pinned model in a bundle: where it is and what it names."""

    field: str  # "model.id" or "fallbacks[0].id"
    provider: str | None
    id: str


@dataclass(frozen=True)
class DeprecationFinding:
    """A pinned model that is retired (error) or retires soon (warning)."""

    file: str
    field: str
    severity: str  # "error" | "warning"
    message: str
    model: str  # "provider/id" as pinned
    retires: str  # YYYY-MM-DD
    replacement: str | None = None
    line: int | None = None  # filled in by callers that know the YAML's line numbers

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "file": self.file, "line": self.line, "field": self.field, "severity": self.severity,
            "message": self.message, "model": self.model, "retires": self.retires,
            "replacement": self.replacement,
        }


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValidationError(f"{where}: expected a date YYYY-MM-DD, got {value!r}")


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{where}: expected text, got {value!r}")
    return value.strip()


def parse_deprecations(data: Any, path: str = "deprecations.yaml") -> list[Retirement]:
    """Validate loaded deprecations.yaml data; None (no file or empty) means no entries."""
    if data is None:
        return []
    if not isinstance(data, Mapping):
        raise ValidationError(f"{path}: expected a mapping with models: {{provider/id: YYYY-MM-DD}}")
    if "models" in data:
        extra = sorted(str(k) for k in data if k not in ("models", *_META_KEYS))
        if extra:
            raise ValidationError(f"{path}: unknown key {extra[0]!r}", hint="entries go under models:")
        models, prefix = data["models"] or {}, "models."
    else:
        models = {k: v for k, v in data.items() if k not in _META_KEYS}
        prefix = ""
    if not isinstance(models, Mapping):
        raise ValidationError(f"{path}: models: expected a mapping of provider/id -> date")
    entries = []
    for key, value in models.items():
        where = f"{path}: {prefix}{key}"
        if not isinstance(key, str) or not key.strip():
            raise ValidationError(f"{path}: {prefix}{key!r}: expected a model id such as openai/gpt-4-0613")
        if isinstance(value, Mapping):
            unknown = sorted(str(k) for k in value if k not in _ENTRY_KEYS)
            if unknown:
                raise ValidationError(f"{where}: unknown key {unknown[0]!r}", hint="use retires, replacement, source, note")
            if "retires" not in value:
                raise ValidationError(f"{where}: retires is missing", hint='write retires: "YYYY-MM-DD"')
            entries.append(Retirement(
                pattern=key.strip(),
                retires=_date(value["retires"], f"{where}.retires"),
                replacement=_text(value.get("replacement"), f"{where}.replacement"),
                note=_text(value.get("note"), f"{where}.note"),
                source=_text(value.get("source"), f"{where}.source"),
                origin=path,
            ))
        else:
            entries.append(Retirement(pattern=key.strip(), retires=_date(value, where), origin=path))
    return entries


def today_from(text: str | None, env: Mapping[str, str]) -> dt.date:
    """The day retirement dates are judged on: `text` (--today), else MODELCTL_TODAY in `env`, else
    today in UTC. UsageError (exit 2) for a day that is not YYYY-MM-DD."""
    raw = text if text is not None else env.get("MODELCTL_TODAY")
    if not raw:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        from .errors import UsageError

        where = "--today" if text is not None else "MODELCTL_TODAY"
        raise UsageError(f"invalid {where} {raw!r}", hint="use a date such as 2026-03-01") from None


def shipped() -> list[Retirement]:
    """The announced retirements shipped in the package (modelctl/data/retirements.yaml)."""
    from . import yamlio
    from .schema import data_path

    path = data_path(SHIPPED)
    return parse_deprecations(yamlio.loads(path.read_bytes(), SHIPPED).data, SHIPPED)


def combine(base: Iterable[Retirement], overrides: Iterable[Retirement]) -> list[Retirement]:
    """`base` extended by `overrides`; an override with the same key replaces the base entry."""
    overrides = list(overrides)
    mine = {r.pattern for r in overrides}
    return [r for r in base if r.pattern not in mine] + overrides


def pins_of_bundle(bundle: Mapping[str, Any]) -> list[Pin]:
    """The bundle's pinned models: model.id and every fallbacks[i].id."""
    pins = []
    model = bundle.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("id"), str):
        pins.append(Pin("model.id", _opt_str(model.get("provider")), model["id"]))
    fallbacks = bundle.get("fallbacks")
    if isinstance(fallbacks, list):
        for i, fb in enumerate(fallbacks):
            if isinstance(fb, Mapping) and isinstance(fb.get("id"), str):
                pins.append(Pin(f"fallbacks[{i}].id", _opt_str(fb.get("provider")), fb["id"]))
    return pins


def _opt_str(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def _days(n: int) -> str:
    return f"{n} day" + ("" if n == 1 else "s")


def check_pins(
    pins: Iterable[Pin],
    table: Iterable[Retirement],
    *,
    file: str,
    today: dt.date,
    warn_days: int = 30,
) -> list[DeprecationFinding]:
    """Findings for pins that are retired (error) or retire within warn_days (warning)."""
    if isinstance(warn_days, bool) or not isinstance(warn_days, int) or warn_days < 0:
        raise ValidationError(f"modelctl.yaml: deprecation.warn_days: expected a whole number >= 0, got {warn_days!r}")
    table = list(table)
    findings = []
    for pin in pins:
        hits = [r for r in table if r.matches(pin.provider, pin.id)]
        if not hits:
            continue
        entry = min(hits, key=lambda r: r.retires)
        left = (entry.retires - today).days
        model = f"{pin.provider}/{pin.id}" if pin.provider else pin.id
        when = entry.retires.isoformat()
        if left <= 0:
            severity = "error"
            ago = "today" if left == 0 else f"{_days(-left)} ago"
            message = f"{pin.field}: {model} was retired on {when} ({ago})"
        elif left <= warn_days:
            severity = "warning"
            message = f"{pin.field}: {model} retires on {when} (in {_days(left)})"
        else:
            continue
        if entry.replacement:
            message += f"; move to {entry.replacement}"
        else:
            message += "; register a version pinned to a supported model"
        if entry.note or entry.source:
            message += f" ({entry.note or entry.source})"
        findings.append(DeprecationFinding(
            file=file, field=pin.field, severity=severity, message=message,
            model=model, retires=when, replacement=entry.replacement,
        ))
    return findings


@dataclass(frozen=True)
class Use:
    """A bundle on a route that pins a model: which version, in which status, in which field."""

    name: str
    version: str
    status: str
    field: str


@dataclass(frozen=True)
class Planned:
    """One retiring model and every version on a route that pins it."""

    model: str  # as pinned: provider/id
    retires: dt.date
    replacement: str | None
    source: str | None
    origin: str
    evaluate_from: dt.date  # retirement minus the warning window: start evaluating the replacement
    days_left: int
    state: Literal["retired", "warning", "planned"]
    uses: tuple[Use, ...]


def plan(bundles: Mapping[tuple[str, str], Mapping[str, Any]], statuses: Mapping[str, Mapping[str, str]],
         table: Iterable[Retirement], *, today: dt.date, warn_days: int, on_route: tuple[str, ...]) -> list[Planned]:
    """Every model with a retirement date that a version on a route pins (model.id or a fallback),
    soonest retirement first."""
    table = list(table)
    found: dict[tuple[str, Retirement], list[Use]] = {}
    for (name, version), data in sorted(bundles.items()):
        status = statuses.get(name, {}).get(version)
        if status not in on_route:
            continue
        for pin in pins_of_bundle(data):
            hits = [r for r in table if r.matches(pin.provider, pin.id)]
            if hits:
                entry = min(hits, key=lambda r: r.retires)
                model = f"{pin.provider}/{pin.id}" if pin.provider else pin.id
                found.setdefault((model, entry), []).append(Use(name, version, status, pin.field))
    out = []
    for (model, entry), uses in found.items():
        left = (entry.retires - today).days
        state: Literal["retired", "warning", "planned"] = \
            "retired" if left <= 0 else "warning" if left <= warn_days else "planned"
        out.append(Planned(model, entry.retires, entry.replacement, entry.source or entry.note, entry.origin,
                           entry.retires - dt.timedelta(days=warn_days), left, state, tuple(uses)))
    return sorted(out, key=lambda p: (p.retires, p.model))


def check_bundle(
    bundle: Mapping[str, Any],
    file: str,
    table: Iterable[Retirement],
    *,
    today: dt.date,
    warn_days: int = 30,
) -> list[DeprecationFinding]:
    """Deprecation findings for every pinned model of one bundle."""
    return check_pins(pins_of_bundle(bundle), table, file=file, today=today, warn_days=warn_days)
