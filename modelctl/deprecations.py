"""Check pinned model ids against the retirement dates in deprecations.yaml (pure).

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
        note: https://docs.anthropic.com/en/docs/resources/model-deprecations
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
from typing import Any

from .errors import ValidationError

_META_KEYS = ("apiVersion", "kind")
_ENTRY_KEYS = ("retires", "replacement", "note")


@dataclass(frozen=True)
class Retirement:
    """One entry of deprecations.yaml."""

    pattern: str  # "provider/id", "id", or either with * ? wildcards
    retires: dt.date
    replacement: str | None = None
    note: str | None = None

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
                raise ValidationError(f"{where}: unknown key {unknown[0]!r}", hint="use retires, replacement, note")
            if "retires" not in value:
                raise ValidationError(f"{where}: retires is missing", hint='write retires: "YYYY-MM-DD"')
            entries.append(Retirement(
                pattern=key.strip(),
                retires=_date(value["retires"], f"{where}.retires"),
                replacement=_text(value.get("replacement"), f"{where}.replacement"),
                note=_text(value.get("note"), f"{where}.note"),
            ))
        else:
            entries.append(Retirement(pattern=key.strip(), retires=_date(value, where)))
    return entries


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
        if entry.note:
            message += f" ({entry.note})"
        findings.append(DeprecationFinding(
            file=file, field=pin.field, severity=severity, message=message,
            model=model, retires=when, replacement=entry.replacement,
        ))
    return findings


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
