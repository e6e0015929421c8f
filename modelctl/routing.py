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

Shadow traffic is mirrored, never served: it never changes what a key is served by.

Routes (README "Routes and segments"): a declared route answers with the same bucket and its own
active and canary (:func:`effective`); a weighted fallback chain is ordered per key by
:func:`fallback_order`. Python's
built-in hash function is never used here: it is salted per process.
"""
from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from .errors import UsageError

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .documents import ResolvedBundle, RollbackChange, RoutingDocument

BUCKETS = 10_000
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # names.NAME_RE (a route is a DNS label), without its imports
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


def assign(dep: Mapping[str, Any], key: str, *, route: str | None = None,
           attributes: Mapping[str, Any] | None = None,
           segments: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """The version that serves ``key`` (None when the model has no active version).

    ``route``: on that declared route (modelctl.routes: its pin and canary, same buckets).
    ``attributes``: the request's caller attributes; ``segments``: modelctl.yaml's segments.rules,
    needed when the canary is limited to a segment (a request outside it gets the active version).
    """
    if route is not None:
        route_of(dep, route)
        active, live = effective(dep, route)
    else:
        live, active = dep.get("canary") or None, dep.get("active")
    if live and live.get("segment") is not None and not _in_segment(live["segment"], attributes, segments):
        live = None
    if live and bucket(dep["name"], key) < threshold(live.get("percent")):
        version: str = live["version"]
        return version
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


def fallback_hash(name: str, route: str, key: str, step: int) -> int:
    """``uint64_be(sha256(utf8(name + "\\0" + route + "\\0" + key + "\\0" + str(step)))[0:8])``."""
    digest = hashlib.sha256(f"{name}\0{route}\0{key}\0{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def fallback_order(name: str, route: str, key: str, chain: list[Any] | tuple[Any, ...], policy: str) -> list[int]:
    """Indexes into a route's fallback ``chain`` in the order to try them for ``key``.

    ordered: the chain as written. weighted: step k draws ``fallback_hash(name, route, key, k) %
    (sum of the remaining weights)`` and takes the first remaining entry (in chain order) whose
    running weight exceeds the draw, so the first choice falls on entry i for a share
    weight_i / total of keys, and every key keeps its order until the chain changes.
    """
    if policy != "weighted":
        return list(range(len(chain)))
    left = list(range(len(chain)))
    out: list[int] = []
    step = 0
    while left:
        total = sum(int(chain[i]["weight"]) for i in left)
        draw = fallback_hash(name, route, key, step) % total
        running = 0
        for pos, i in enumerate(left):
            running += int(chain[i]["weight"])
            if draw < running:
                out.append(left.pop(pos))
                break
        step += 1
    return out


# (name, route, key, weights, order): the README table and tests/test_routes.py check these.
FALLBACK_VECTORS: list[tuple[str, str, str, tuple[int, ...], list[int]]] = [
    ("support-agent", "summarise", "user-42", (3, 1, 1), [2, 0, 1]),
    ("support-agent", "summarise", "user-43", (3, 1, 1), [1, 2, 0]),
    ("support-agent", "summarise", "", (3, 1, 1), [2, 0, 1]),
    ("support-agent", "search", "user-42", (1, 1), [1, 0]),
    ("support-agent", "chat", "ünïcode-ключ-鍵", (5, 2, 2, 1), [0, 2, 1, 3]),
]


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
    if dep.get("routes"):  # absent without routes: those documents stay byte-identical
        doc["routes"] = routes_document(dep, entry)
        for rname, rdoc in doc["routes"].items():
            # a route that follows a segment canary serves it only inside the segment, as the model does
            rlive = effective(dep, rname)[1]
            if rlive and rlive.get("segment") is not None and rdoc["canary"] is not None:
                from .segments import inline

                rule = (segments or {}).get(rlive["segment"])
                if rule is None:
                    _in_segment(rlive["segment"], None, segments)  # raises, naming the undeclared segment
                rdoc["canary"] = {**rdoc["canary"], "segment": inline(rlive["segment"], rule or {})}
    return doc


# -- routes (modelctl.routes owns their transitions; what a route serves is decided here) --------------

def check_route(route: str) -> str:
    """A route name must be a DNS label (the model-name rule); UsageError otherwise."""
    if not isinstance(route, str) or not _LABEL.match(route):
        raise UsageError(f"invalid route name {route!r}: a route is a DNS label (lowercase letters, digits, '-', "
                         "at most 63)", hint="pick a name such as summarise or search")
    return route


def routes_of(dep: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The deployment's routes (empty when it declares none)."""
    found = dep.get("routes") or {}
    return found if isinstance(found, dict) else {}


def route_of(dep: Mapping[str, Any], route: str) -> dict[str, Any]:
    """One declared route; UsageError (exit 2) naming the routes that exist otherwise."""
    check_route(route)
    name = dep.get("name", "?")
    declared = routes_of(dep)
    if not declared:
        raise UsageError(f"{name} declares no routes, so --route {route} names nothing",
                         hint=f"declare it first with `modelctl route {name} {route}`")
    if route not in declared:
        raise UsageError(f"{name} has no route {route!r} (routes: {', '.join(sorted(declared))})",
                         hint=f"declare it with `modelctl route {name} {route}`")
    return declared[route] or {}


def effective(dep: Mapping[str, Any], route: str) -> tuple[str | None, dict[str, Any] | None]:
    """What a declared route serves: (active version, canary split or None)."""
    r = routes_of(dep).get(route) or {}
    active = r.get("active") or dep.get("active")
    own = r.get("canary") or None
    if own:
        return active, own
    if r.get("active"):
        return active, None  # pinned: the model's canary does not reach it
    return active, dep.get("canary") or None


def routes_document(dep: Mapping[str, Any], entry: Any) -> dict[str, Any]:
    """The ``routes`` of a routing document; ``entry(version, percent)`` resolves one bundle."""
    out: dict[str, Any] = {}
    for rname in sorted(routes_of(dep)):
        r = routes_of(dep)[rname] or {}
        active, live = effective(dep, rname)
        pct: float | int = live["percent"] if live else 0
        served: float | int = 100 - pct
        if isinstance(served, float) and served.is_integer():
            served = int(served)
        out[rname] = {
            "active": entry(active, served) if active else None,
            "canary": entry(live["version"], live["percent"]) if live and active else None,
            "fallback": copy.deepcopy(r.get("fallback")) if r.get("fallback") else None,
            "follows_model": not r.get("active"),
        }
    return out
