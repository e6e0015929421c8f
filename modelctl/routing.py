"""Deterministic key -> version assignment, reproducible by a gateway in any language.

Spec (README "Routing"):

1. ``data = name + "\\0" + key`` encoded as UTF-8 (the name is a DNS label, so it never
   contains NUL and the pair is unambiguous);
2. ``bucket = uint64_big_endian(sha256(data)[0:8]) % 10000``;
3. the key is served by the canary when ``bucket < round(percent * 100)``, else by the active
   version. Raising the percent only adds buckets, so no key moves from the canary back to the
   stable version while a canary ramps up.

A canary limited to a segment (``canary.segment`` in the deployment, its rule in
``segments.rules`` of modelctl.yaml; :mod:`modelctl.segments`) serves a key only when the
request's attributes are in the segment and step 3 holds: the percent is a share of the segment.

Shadow traffic is mirrored, never served: it never changes what a key is served by. Python's
built-in hash function is never used here: it is salted per process.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .documents import ResolvedBundle, RollbackChange, RoutingDocument

BUCKETS = 10_000
SCHEMA = "modelctl/v1"

# (name, key, bucket): the README table and tests/test_routing.py check these.
TEST_VECTORS = [
    ("support-agent", "user-42", 4527),
    ("support-agent", "user-43", 1409),
    ("support-agent", "", 7387),
    ("support-agent", "customer:ACME/eu-west-1", 8898),
    ("search-ranker", "user-42", 2266),
    ("support-agent", "ünïcode-ключ-鍵", 443),
]


def bucket(name: str, key: str) -> int:
    """The key's bucket in [0, 10000): sha256 of ``name\\0key``, first 8 bytes big-endian, mod 10000."""
    digest = hashlib.sha256(f"{name}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def threshold(percent: float | int | None) -> int:
    """Number of buckets (from 0) that go to a canary at ``percent``."""
    if not percent:
        return 0
    return max(0, min(BUCKETS, round(percent * 100)))


def assign(dep: Mapping[str, Any], key: str, *, attributes: Mapping[str, Any] | None = None,
           segments: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """The version that serves ``key`` (None when the model has no active version).

    ``attributes``: the request's caller attributes; ``segments``: modelctl.yaml's segments.rules,
    needed when the canary is limited to a segment (a request outside it gets the active version).
    """
    live = dep.get("canary") or None
    if live and live.get("segment") is not None and not _in_segment(live["segment"], attributes, segments):
        live = None
    if live and bucket(dep["name"], key) < threshold(live.get("percent")):
        version: str = live["version"]
        return version
    active: str | None = dep.get("active")
    return active


def _in_segment(name: str, attributes: Mapping[str, Any] | None,
                segments: Mapping[str, Mapping[str, Any]] | None) -> bool:
    from .segments import matches

    rule = (segments or {}).get(name)
    if rule is None:
        from .errors import NotFound

        raise NotFound(f"the canary serves segment {name}, which modelctl.yaml does not declare",
                       hint="declare it under segments.rules, or widen the canary (canary NAME VERSION --pct N)")
    return matches(rule, attributes)


class _Resolved(TypedDict):
    """What a gateway needs of a bundle (ResolvedBundle without the version and percent)."""

    model: dict[str, str]
    prompt: dict[str, str]
    config: dict[str, Any]
    fallbacks: NotRequired[list[dict[str, Any]]]
    segment: NotRequired[dict[str, Any]]  # never set here: routing_document adds a canary's segment


def _resolved(bundle: Mapping[str, Any]) -> _Resolved:
    model = bundle.get("model") or {}
    prompt = bundle.get("prompt") or {}
    out: _Resolved = {
        "model": {k: model[k] for k in ("provider", "id", "adapter") if model.get(k) is not None},
        "prompt": {k: prompt[k] for k in ("template", "sha256") if prompt.get(k) is not None},
        "config": copy.deepcopy(bundle.get("config") or {}),
    }
    if bundle.get("fallbacks"):
        out["fallbacks"] = copy.deepcopy(bundle["fallbacks"])
    return out


def routing_document(dep: Mapping[str, Any], bundles: Mapping[str, Mapping[str, Any]], *,
                     segments: Mapping[str, Mapping[str, Any]] | None = None) -> RoutingDocument:
    """What a gateway needs: active, canary and shadow with percents and resolved bundles.

    ``bundles`` maps each version named in the deployment to its loaded bundle; a missing one
    raises :class:`~modelctl.errors.NotFound`. ``segments`` (modelctl.yaml's segments.rules) inlines
    the rule of a canary limited to a segment; a rollback's ``change`` is carried as written.
    """
    from .errors import NotFound

    def entry(version: str, percent: float | int) -> ResolvedBundle:
        if version not in bundles:
            raise NotFound(f"bundle {version} of {dep.get('name')} is missing", hint="run `modelctl check`")
        return {"version": version, "percent": percent, **_resolved(bundles[version])}

    live = dep.get("canary") or None
    mirror = dep.get("shadow") or None
    canary_pct: float | int = live["percent"] if live else 0
    served = 100 - canary_pct
    if isinstance(served, float) and served.is_integer():
        served = int(served)
    doc: RoutingDocument = {
        "schema": SCHEMA,
        "name": dep["name"],
        "active": entry(dep["active"], served) if dep.get("active") else None,
        "canary": entry(live["version"], live["percent"]) if live else None,
        "shadow": entry(mirror["version"], mirror["percent"]) if mirror else None,
        "assignment": {
            "hash": "sha256",
            "input": "utf8(name + '\\0' + key)",
            "bucket": "uint64_be(digest[0:8]) % 10000",
            "buckets": BUCKETS,
            "canary_when": "bucket < round(canary.percent * 100)",
        },
    }
    if live and live.get("segment") is not None and doc["canary"] is not None:
        # documents without a segment keep their bytes: the keys appear only with one
        from .segments import SEGMENT_WHEN, inline

        rule = (segments or {}).get(live["segment"])
        if rule is None:
            _in_segment(live["segment"], None, segments)  # raises, naming the undeclared segment
            raise AssertionError  # pragma: no cover
        doc["canary"]["segment"] = inline(live["segment"], rule)
        doc["assignment"]["segment_when"] = SEGMENT_WHEN
    if dep.get("change"):
        doc["change"] = cast("RollbackChange", copy.deepcopy(dict(dep["change"])))
    return doc
