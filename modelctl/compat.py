"""Compatibility between what a bundle needs and what the platform provides (pure: no I/O).

A bundle may declare what it needs (`compatibility:` in the bundle, immutable like the rest):

    compatibility:
      embedding: {model: text-embedding-3-large, version: "2"}   # the index its retrieval queries
      min_api_version: "2025-01-01"                              # the oldest client API it works with
      breaking_changes: [citations-as-list]                      # what its callers must accept

and `modelctl.yaml` declares what the platform provides, for the model's default traffic and,
per route, what differs:

    platform:
      embedding: {model: text-embedding-3-large, version: "2"}
      api_versions: ["2024-06-01", "2025-01-01"]                 # client API versions served
      accepts_breaking: []                                       # breaking changes callers accept
      routes:
        search: {embedding: {model: text-embedding-3-small, version: "1"}}

A route's entry is merged over the top level key by key. A bundle is compatible with a place
when every need is met there:

- `embedding`: the place declares an embedding index and it is the same model and version;
- `min_api_version`: some API version the place serves is at least it (versions compare in
  natural order: digit runs as numbers, so "v10" > "v9" and ISO dates compare as dates);
- `breaking_changes`: each one is in the place's `accepts_breaking`.

A need the platform does not declare (no `embedding`, no `api_versions`) is a mismatch: an
undeclared platform cannot be shown to fit, and the check exists to refuse what cannot.
A bundle that declares nothing is compatible everywhere.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_PLACE = "default"


@dataclass(frozen=True)
class Mismatch:
    """One need a place does not meet."""

    place: str  # "default" or a route name
    need: str  # embedding | min_api_version | breaking_changes
    message: str


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Order API versions naturally: digit runs as numbers ("v10" after "v9"), the rest as text."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|[^\d]+", text))


def place(platform: Mapping[str, Any], route: str | None) -> dict[str, Any]:
    """What the platform provides at a route (None: the model's default traffic)."""
    top = {k: v for k, v in platform.items() if k != "routes"}
    if route is None:
        return top
    return {**top, **((platform.get("routes") or {}).get(route) or {})}


def places(platform: Mapping[str, Any], routes: Iterable[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(name, provides) for the default traffic and each of `routes` the platform declares."""
    declared = platform.get("routes") or {}
    return [(DEFAULT_PLACE, place(platform, None))] + [(r, place(platform, r)) for r in sorted(set(routes))
                                                        if r in declared]


def _embedding(value: Any) -> str:
    return f"{value.get('model')}@{value.get('version')}" if isinstance(value, Mapping) else "none"


def mismatches(needs: Mapping[str, Any] | None, provides: Mapping[str, Any], where: str = DEFAULT_PLACE) -> list[Mismatch]:
    """Every need of a bundle's `compatibility:` block that `provides` (one place) does not meet."""
    needs = needs or {}
    out: list[Mismatch] = []
    at = "the platform" if where == DEFAULT_PLACE else f"route {where}"
    want = needs.get("embedding")
    if want:
        have = provides.get("embedding")
        if not have:
            out.append(Mismatch(where, "embedding", f"needs embedding {_embedding(want)} but {at} declares no "
                                                   "embedding index (platform.embedding in modelctl.yaml)"))
        elif (str(have.get("model")), str(have.get("version"))) != (str(want.get("model")), str(want.get("version"))):
            out.append(Mismatch(where, "embedding", f"needs embedding {_embedding(want)} but {at} serves the "
                                                   f"index of {_embedding(have)}"))
    least = needs.get("min_api_version")
    if least is not None:
        served = [str(v) for v in provides.get("api_versions") or []]
        if not served:
            out.append(Mismatch(where, "min_api_version", f"needs API version {least} or later but {at} declares "
                                                          "no api_versions"))
        elif max(natural_key(v) for v in served) < natural_key(str(least)):
            out.append(Mismatch(where, "min_api_version", f"needs API version {least} or later but {at} serves "
                                                          f"{', '.join(served)}"))
    accepted = {str(x) for x in provides.get("accepts_breaking") or []}
    for change in needs.get("breaking_changes") or []:
        if str(change) not in accepted:
            out.append(Mismatch(where, "breaking_changes", f"makes the breaking change {change!r}, which {at} does "
                                                           "not accept (platform accepts_breaking)"))
    return out


def check(needs: Mapping[str, Any] | None, platform: Mapping[str, Any], routes: Iterable[str] = ()) -> list[Mismatch]:
    """Mismatches of one bundle at the default traffic and at each of the model's `routes`."""
    return [m for name, provides in places(platform, routes) for m in mismatches(needs, provides, name)]


def summary(found: list[Mismatch]) -> str:
    """Mismatches as one line (for an error or a trailer)."""
    return "; ".join(m.message for m in found)


# roles shown by `modelctl compat`, in the order of a row's importance; serving ones decide the exit code
SERVING_ROLES = ("active", "canary", "shadow")
CANDIDATE_ROLES = ("staging",)


def rows(name: str, dep: Mapping[str, Any], needs_of: Mapping[str, Mapping[str, Any] | None],
         platform: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The matrix rows of one model: each serving and candidate version at each place it serves.

    `needs_of`: version -> its bundle's `compatibility:` block (None when it declares none).
    """
    out: list[dict[str, Any]] = []
    routes = list((dep.get("routes") or {}).keys())
    by_role = sorted(((v, st) for v, st in (dep.get("versions") or {}).items()
                      if st in SERVING_ROLES + CANDIDATE_ROLES),
                     key=lambda vs: ((SERVING_ROLES + CANDIDATE_ROLES).index(vs[1]), natural_key(vs[0])))
    for version, role in by_role:
        needs = needs_of.get(version)
        for where, provides in places(platform, routes):
            found = mismatches(needs, provides, where)
            out.append({"model": name, "version": version, "role": role, "place": where,
                        "serving": role in SERVING_ROLES, "declares": bool(needs),
                        "compatible": not found, "mismatches": [m.message for m in found]})
    return out
