"""Caller segments: named rules on request attributes that a canary may be limited to (pure, no I/O).

``modelctl.yaml`` declares the attributes callers send and one rule per segment (README "Routes
and segments"):

```yaml
segments:
  attributes: [tier, region]
  rules:
    internal: {attribute: tier, equals: internal}
    eu: {attribute: region, in: [eu-west-1, eu-central-1]}
```

A request is in a segment when its attributes carry the rule's attribute with a value equal to
``equals`` (or one of ``in``); values compare as exact strings, and a request without the
attribute is never in a segment. A canary with a segment serves a key when the request is in the
segment and the key's bucket (:func:`modelctl.routing.bucket`, the same bucket as without a
segment) is below ``round(percent * 100)``: the percent is a share of the segment's traffic.
Widening the canary to everyone keeps the bucket, so a key in the segment that was served by the
canary stays on it when the percent does not go down.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import UsageError

# A segment name is a DNS label, like a model name (names.NAME_RE): it is a trailer value and a
# metrics label value.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
# An attribute name: what a gateway passes as a request attribute (also an HTTP header suffix).
ATTRIBUTE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}\Z")
SEGMENT_WHEN = ("attributes[canary.segment.attribute] == canary.segment.equals "
                "(or is one of canary.segment.in); no attribute: not in the segment")
# every percent may be used inside a segment, and all of it (100) too: the segment bounds the risk
SEGMENT_PERCENT = 100

# (key, attributes, bucket, version) with active 2.4.0 and canary 2.5.0 at 50 % of segment
# internal {attribute: tier, equals: internal}: the README table and tests/test_segments.py check these.
VECTOR_MODEL = "support-agent"
VECTOR_RULES: dict[str, dict[str, Any]] = {"internal": {"attribute": "tier", "equals": "internal"}}
TEST_VECTORS: list[tuple[str, dict[str, str], int, str]] = [
    ("user-42", {"tier": "internal"}, 4527, "2.5.0"),
    ("user-42", {}, 4527, "2.4.0"),
    ("user-42", {"tier": "external"}, 4527, "2.4.0"),
    ("user-42", {"tier": "Internal"}, 4527, "2.4.0"),
    ("user-43", {"tier": "internal", "region": "eu-west-1"}, 1409, "2.5.0"),
    ("", {"tier": "internal"}, 7387, "2.4.0"),
    ("customer:ACME/eu-west-1", {"tier": "internal"}, 8898, "2.4.0"),
]


def check_segment_name(name: object) -> str:
    """The segment name if it is a DNS label, else UsageError (exit 2)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"invalid segment name {str(name)[:70]!r}",
                         hint="use lowercase letters, digits and '-' (a DNS label, at most 63 characters)")
    return name


def rules_of(config: Mapping[str, Any] | None) -> Mapping[str, Mapping[str, Any]]:
    """The `segments.rules` of a modelctl.yaml document (as Config.as_dict gives it), or {}."""
    section = (config or {}).get("segments") or {}
    rules: Mapping[str, Mapping[str, Any]] = section.get("rules") or {}
    return rules


def require(config: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    """The rule of a declared segment; UsageError naming the declared ones otherwise."""
    check_segment_name(name)
    rules = rules_of(config)
    if name not in rules:
        known = ", ".join(sorted(rules)) or "none"
        raise UsageError(f"segment {name!r} is not declared in modelctl.yaml (declared: {known})",
                         hint="add it under segments.rules in modelctl.yaml and commit that first")
    return rules[name]


def inline(name: str, rule: Mapping[str, Any]) -> dict[str, Any]:
    """A segment as a routing document carries it: its name and its rule, so gateways need no config."""
    out: dict[str, Any] = {"name": name, "attribute": rule["attribute"]}
    if "equals" in rule:
        out["equals"] = rule["equals"]
    else:
        out["in"] = list(rule["in"])
    return out


def matches(rule: Mapping[str, Any], attributes: Mapping[str, Any] | None) -> bool:
    """Whether request attributes fall in a segment (exact string comparison; missing: no)."""
    if not attributes:
        return False
    value = attributes.get(rule["attribute"])
    if not isinstance(value, str):
        return False
    if "equals" in rule:
        return bool(value == rule["equals"])
    return value in rule["in"]


def parse_attributes(pairs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``--attr name=value`` options as a mapping; UsageError (exit 2) on a malformed one or a repeat."""
    out: dict[str, str] = {}
    for text in pairs or ():
        name, sep, value = text.partition("=")
        if not sep or not ATTRIBUTE_RE.match(name) or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError(f"invalid --attr {text[:80]!r}",
                             hint="write --attr NAME=VALUE, e.g. --attr tier=internal (a name of letters, "
                                  "digits, '_', '.', '-')")
        if name in out:
            raise UsageError(f"--attr {name} is given twice", hint="give each attribute once")
        out[name] = value
    return out


def problems(section: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with a `segments:` section beyond its schema: (location, message) pairs."""
    out: list[tuple[tuple[str, ...], str]] = []
    declared = section.get("attributes") or []
    for name, rule in (section.get("rules") or {}).items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            out.append((("segments", "rules", str(name)),
                        f"segment name {str(name)[:70]!r} is not a DNS label (lowercase letters, digits, '-')"))
            continue
        attribute = rule.get("attribute") if isinstance(rule, Mapping) else None
        if isinstance(attribute, str) and attribute not in declared:
            out.append((("segments", "rules", name, "attribute"),
                        f"segment {name} uses attribute {attribute!r}, which segments.attributes does not declare "
                        f"(declared: {', '.join(declared) or 'none'}); add it there"))
    return out
