"""Serving client: pick the version that serves a request key from routing documents on disk or in git.

A gateway process builds one :class:`Router` from a routing-document file, a directory of them (a
mounted ConfigMap) or a registry at a git ref, and asks ``router.pick(model, key)`` per request. The
answer applies exactly the rule of :mod:`modelctl.routing` (what ``resolve --key`` and ``which
--key`` report), so "which version served user X" stays true for traffic served here.

Snapshots are immutable: a reload builds a whole new one and swaps it in with one reference
assignment, so a reader never sees half of an update and never takes a lock. A document that does
not load (truncated, invalid JSON, wrong schema) keeps the previous snapshot serving.

Only the standard library and :mod:`modelctl.routing` are imported here; the git source imports
:class:`modelctl.Registry` when it is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import routing
from .errors import NotFound, ValidationError

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is 3.13+; annotations only, never imported at run time

__all__ = ["Router", "Snapshot", "Pick", "Bundle", "Route", "UnknownModel", "UnknownRoute", "NoActiveVersion",
           "InvalidRoutingDocument", "shadow_bucket", "digest"]

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # names.NAME_RE, without its imports
# The fields of the bucket rule this client implements; a document announcing another rule is refused
# rather than served by the wrong one.
_RULE = {"hash": "sha256", "bucket": "uint64_be(digest[0:8]) % 10000", "buckets": routing.BUCKETS,
         "canary_when": "bucket < round(canary.percent * 100)"}
# Bundle config keys that have a GenAI semantic-convention request attribute.
_CONFIG_ATTRS = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
                 "max_tokens": "gen_ai.request.max_tokens", "top_k": "gen_ai.request.top_k",
                 "seed": "gen_ai.request.seed"}
DATA_LINK = "..data"  # the symlink the kubelet swaps atomically in a mounted ConfigMap


class UnknownModel(NotFound):
    """``pick`` was asked for a model the loaded documents do not name."""


class NoActiveVersion(NotFound):
    """The model exists but has no active version yet: nothing serves it."""


class InvalidRoutingDocument(ValidationError):
    """A routing document that cannot be served: unreadable, not JSON, or outside the modelctl/v1 shape."""


def shadow_bucket(name: str, key: str) -> int:
    """The key's shadow-mirror bucket: ``routing.bucket(name + "/shadow", key)``, independent of its routing bucket."""
    return routing.bucket(f"{name}/shadow", key)


_CONTAINERS = (dict, list)


def _freeze(value: Any) -> Any:
    # shared by every reader thread: a caller mutating a config must not change what others serve
    kind = type(value)  # exact types: JSON gives only these, and isinstance on ABCs is slow
    if kind is dict:
        # leaves (strings, numbers) are taken as they are without a call each: reloads stay cheap
        return MappingProxyType({k: _freeze(v) if type(v) in _CONTAINERS else v for k, v in value.items()})
    if kind is list:
        return tuple([_freeze(v) if type(v) in _CONTAINERS else v for v in value])
    return value


def _thaw(value: Any) -> Any:
    kind = type(value)
    if kind is MappingProxyType or kind is dict:
        return {k: _thaw(v) for k, v in value.items()}
    if kind is tuple or kind is list:
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Bundle:
    """One resolved version as the routing document carries it (read-only mappings)."""

    version: str
    percent: float
    model: Mapping[str, Any]          # provider, id, adapter
    prompt: Mapping[str, Any]         # template, sha256, and text when rendered inline
    config: Mapping[str, Any]
    fallbacks: tuple[Mapping[str, Any], ...] = ()
    _cache: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """Digest of the resolved bundle (:func:`digest`), computed on first use: reloads stay cheap."""
        value = self._cache.get("sha256")
        if value is None:
            value = self._cache.setdefault("sha256", digest(self.as_dict()))
        return value

    @property
    def provider(self) -> str:
        """The provider name (``model.provider``)."""
        provider: str = self.model["provider"]  # a string: _bundle checked it
        return provider

    @property
    def model_id(self) -> str:
        """The pinned provider model id (``model.id``)."""
        model_id: str = self.model["id"]  # a string: _bundle checked it
        return model_id

    def as_dict(self) -> dict[str, Any]:
        """A plain, mutable copy (e.g. to pass ``config`` on to a provider SDK)."""
        out: dict[str, Any] = {"version": self.version, "percent": self.percent, "model": _thaw(self.model),
               "prompt": _thaw(self.prompt), "config": _thaw(self.config)}
        if self.fallbacks:
            out["fallbacks"] = _thaw(self.fallbacks)
        return out


def digest(entry: Mapping[str, Any]) -> str:
    """sha256 of a resolved bundle: canonical JSON of its model, prompt (template, sha256), config, fallbacks.

    The inline prompt text is left out (its sha256 already pins it), so the digest is the same whether
    a document carries the text or not, and anyone can recompute it from ``modelctl resolve NAME --json``.
    """
    prompt = entry.get("prompt") or {}
    canonical = {"model": entry.get("model") or {},
                 "prompt": {k: prompt[k] for k in ("template", "sha256") if k in prompt},
                 "config": entry.get("config") or {},
                 "fallbacks": entry.get("fallbacks") or []}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Pick:
    """What serves one request: the version and its bundle, and whether to mirror it to the shadow."""

    model: str
    bucket: int
    version: str
    role: str                         # "active" or "canary"
    bundle: Bundle
    mirror: bool                      # send a copy of this request to the shadow (never served)
    shadow: Bundle | None             # the shadow's bundle when mirror is true, else None
    commit: str | None                # registry commit the document was resolved at, when known
    _attrs: dict[str, dict[str, Any]] = field(repr=False, compare=False)  # the model's version -> static attributes cache
    segment: str | None = None        # the canary's segment when the request is in it (label its metrics so)
    route: str | None = None          # the route asked for (None: the model as a whole)
    fallback_policy: str | None = None  # the route's fallback policy: "ordered", "weighted" or None
    # the route's fallback chain in the order to try for this key (weighted: routes.fallback_order)
    fallbacks: tuple[Mapping[str, Any], ...] = ()

    def attributes(self) -> dict[str, Any]:
        """OpenTelemetry attributes for the request's span (a plain dict; no opentelemetry dependency)."""
        static = self._attrs.get(self.version)
        if static is None:  # built on first use per version; racing threads build equal dicts
            static = self._attrs.setdefault(self.version, _span_attrs(self.model, self.bundle, self.commit))
        out = dict(static)
        out["modelctl.role"] = self.role
        out["modelctl.bucket"] = self.bucket
        out["modelctl.shadow.mirrored"] = self.mirror
        if self.segment is not None:
            out["modelctl.segment"] = self.segment
        if self.route is not None:
            out["modelctl.route"] = self.route
        return out


class UnknownRoute(NotFound):
    """``pick`` named a route that the model's document does not declare (the model declares others)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One declared route of a model as its document resolves it: what serves it and its fallback chain."""

    active: Bundle
    canary: Bundle | None
    canary_until: int
    policy: str | None
    chain: tuple[Mapping[str, Any], ...]
    # the route's canary limited to a segment (the model's, when the route follows it): see _Model
    segment: tuple[str, frozenset[str]] | None = None
    segment_name: str | None = None


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    active: Bundle | None
    canary: Bundle | None
    canary_until: int                 # buckets [0, canary_until) go to the canary
    shadow: Bundle | None
    shadow_until: int
    commit: str | None
    origin: str
    attrs: dict[str, dict[str, Any]]  # version -> static span attributes, filled on first use
    # a canary limited to a segment: (attribute, the values in it); None: the canary serves everyone
    segment: tuple[str, frozenset[str]] | None = None
    segment_name: str | None = None
    routes: Mapping[str, Route] | None = None  # None: the document declares no routes (every route follows)


class Snapshot:
    """An immutable set of loaded routing documents; every pick from one snapshot agrees with the others."""

    __slots__ = ("_models", "stamp", "commit", "origin", "compiled")

    def __init__(self, models: dict[str, _Model], stamp: Any = None, commit: str | None = None, origin: str = "",
                 compiled: dict[tuple[str, bytes], _Model] | None = None) -> None:
        self._models = models
        self.compiled = compiled or {}  # (origin, file bytes) -> compiled model, reused by the next reload
        self.stamp = stamp      # what the source looked like when read (to skip unchanged reloads)
        self.commit = commit    # the git source's commit; per-model commits are on each pick
        self.origin = origin

    def models(self) -> list[str]:
        """The model names this snapshot serves, sorted."""
        return sorted(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def document_commit(self, name: str) -> str | None:
        """The registry commit a model's document was resolved at, when it says."""
        return self._entry(name).commit

    def routes(self, name: str) -> Mapping[str, Route]:
        """A model's declared routes (empty when its document declares none)."""
        return self._entry(name).routes or {}

    def bundles(self, name: str) -> dict[str, Bundle | None]:
        """A model's active, canary and shadow bundles (None when absent)."""
        m = self._entry(name)
        return {"active": m.active, "canary": m.canary, "shadow": m.shadow}

    def _entry(self, name: str) -> _Model:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise UnknownModel(f"no routing document for model {name!r} (loaded: {known})",
                               hint="check the model name, or that its document is in the mounted directory") from None

    def pick(self, name: str, key: str, *, route: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> Pick:
        """The version that serves ``key`` (routing.bucket/threshold), and the shadow-mirror decision.

        ``route``: on that route (its pin, canary and fallback chain). A document that declares no
        routes answers every route as the model; one that declares others raises UnknownRoute.
        ``attributes``: the caller's request attributes; a canary limited to a segment serves only
        requests whose attributes are in it (a request without them is not).
        """
        m = self._models.get(name)
        if m is None:
            m = self._entry(name)  # raises UnknownModel, naming the models it has
        if m.active is None:
            raise NoActiveVersion(f"{name} has no active version, so nothing serves it",
                                  hint=f"promote a version of {name} to active")
        b = routing.bucket(name, key)
        mirror = m.shadow_until > 0 and shadow_bucket(name, key) < m.shadow_until
        r = m.routes.get(route) if route is not None and m.routes is not None else None
        if r is None and route is not None and m.routes is not None:
            raise UnknownRoute(f"{name} has no route {route!r} (routes: {', '.join(sorted(m.routes)) or 'none'})",
                               hint=f"declare it with `modelctl route {name} {route}`, or check the route name")
        if r is not None:
            r_inside = r.segment is not None and _in(r.segment, attributes)
            if b < r.canary_until and r.canary is not None and (r.segment is None or r_inside):
                served, role = r.canary, "canary"
            else:
                served, role = r.active, "active"
            chain = r.chain
            if r.policy == "weighted" and len(chain) > 1:
                assert route is not None  # r was found under it
                chain = tuple(chain[i] for i in routing.fallback_order(name, route, key, chain, "weighted"))
            return Pick(name, b, served.version, role, served, mirror, m.shadow if mirror else None, m.commit,
                        m.attrs, r.segment_name if r_inside else None, route, r.policy, chain)
        inside = m.segment is not None and _in(m.segment, attributes)
        if b < m.canary_until and m.canary is not None and (m.segment is None or inside):
            served, role = m.canary, "canary"
        else:
            served, role = m.active, "active"
        return Pick(name, b, served.version, role, served, mirror, m.shadow if mirror else None, m.commit,
                    m.attrs, m.segment_name if inside else None, route)


def _in(segment: tuple[str, frozenset[str]], attributes: Mapping[str, Any] | None) -> bool:
    # segments.matches, on the compiled rule: exact strings, a missing attribute is outside
    if not attributes:
        return False
    value = attributes.get(segment[0])
    return isinstance(value, str) and value in segment[1]


# -- validation and compilation (plain Python checks: no jsonschema at serving time) ----------------

def _fail(origin: str, what: str) -> InvalidRoutingDocument:
    return InvalidRoutingDocument(f"{origin}: {what}",
                                  hint="serve documents written by 'modelctl resolve NAME --json' (schema modelctl/v1)")


def _number(value: object) -> TypeIs[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bundle(origin: str, where: str, entry: Any) -> Bundle:
    if not isinstance(entry, dict):
        raise _fail(origin, f"{where} must be an object or null")
    version, percent = entry.get("version"), entry.get("percent")
    if not isinstance(version, str) or not version:
        raise _fail(origin, f"{where}.version must be a non-empty string")
    # the active version's share is 100 minus the canary's and may be 0; a canary or shadow has a share
    low_ok = where == "active"
    if not _number(percent) or not (0 <= percent <= 100) or (percent == 0 and not low_ok):
        raise _fail(origin, f"{where}.percent must be a number in {'[0' if low_ok else '(0'}, 100], not {percent!r}")
    model = entry.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("provider"), str) or not isinstance(model.get("id"), str):
        raise _fail(origin, f"{where}.model must name a provider and an id")
    for part in ("prompt", "config"):
        if not isinstance(entry.get(part, {}), dict):
            raise _fail(origin, f"{where}.{part} must be an object")
    fallbacks = entry.get("fallbacks", [])
    if not isinstance(fallbacks, list) or not all(isinstance(f, dict) for f in fallbacks):
        raise _fail(origin, f"{where}.fallbacks must be a list of objects")
    return Bundle(version, percent, _freeze(model), _freeze(entry.get("prompt") or {}),
                  _freeze(entry.get("config") or {}), _freeze(fallbacks))


def _span_attrs(name: str, bundle: Bundle, commit: str | None) -> dict[str, Any]:
    # gen_ai.provider.name is the current semantic-convention name; gen_ai.system is the one it replaced
    # (conventions up to v1.36), still what many backends and dashboards read, so both are set.
    attrs: dict[str, Any] = {"gen_ai.provider.name": bundle.provider, "gen_ai.system": bundle.provider,
                             "gen_ai.request.model": bundle.model_id}
    for key, attr in _CONFIG_ATTRS.items():
        value = bundle.config.get(key)
        if _number(value):
            attrs[attr] = value
    attrs.update({"modelctl.model": name, "modelctl.version": bundle.version, "modelctl.bundle.sha256": bundle.sha256})
    if bundle.model.get("adapter"):
        attrs["modelctl.adapter"] = bundle.model["adapter"]
    if bundle.prompt.get("sha256"):
        attrs["modelctl.prompt.sha256"] = bundle.prompt["sha256"]
    if commit:
        attrs["modelctl.registry.commit"] = commit
    return attrs


def _segment(origin: str, entry: Any) -> tuple[str, tuple[str, frozenset[str]]] | None:
    """canary.segment: absent/null, or {name, attribute, equals | in} (README "Routes and segments")."""
    seg = entry.get("segment") if isinstance(entry, dict) else None
    if seg is None:
        return None
    if not isinstance(seg, dict):
        raise _fail(origin, "canary.segment must be an object or null")
    name, attribute = seg.get("name"), seg.get("attribute")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(origin, f"canary.segment.name must be a segment name (a DNS label), not {name!r}")
    if not isinstance(attribute, str) or not attribute:
        raise _fail(origin, "canary.segment.attribute must be a non-empty string")
    if ("equals" in seg) == ("in" in seg):
        raise _fail(origin, "canary.segment needs exactly one of equals and in")
    if "equals" in seg:
        if not isinstance(seg["equals"], str):
            raise _fail(origin, "canary.segment.equals must be a string")
        values = frozenset((seg["equals"],))
    else:
        listed = seg["in"]
        if not isinstance(listed, list) or not listed or not all(isinstance(v, str) for v in listed):
            raise _fail(origin, "canary.segment.in must be a non-empty list of strings")
        values = frozenset(listed)
    return name, (attribute, values)


def _change(origin: str, doc: dict[str, Any]) -> None:
    """The optional top-level `change` a rollback writes: {from, to, kind, redeploy}."""
    change = doc.get("change")
    if change is None:
        return
    if not isinstance(change, dict) or not all(isinstance(change.get(k), str) for k in ("from", "to", "kind")) \
            or not isinstance(change.get("redeploy"), bool):
        raise _fail(origin, "change must be an object with from, to, kind (strings) and redeploy (a boolean)")


def compile_document(doc: Any, origin: str = "<document>", commit: str | None = None) -> _Model:
    """Validate one routing document and turn it into the form ``pick`` reads."""
    if not isinstance(doc, dict):
        raise _fail(origin, "a routing document is a JSON object")
    if doc.get("schema") != routing.SCHEMA:
        raise _fail(origin, f"schema must be {routing.SCHEMA!r}, not {doc.get('schema')!r}")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(origin, f"name must be a model name (a DNS label), not {name!r}")
    rule = doc.get("assignment")
    if rule is not None:
        if not isinstance(rule, dict):
            raise _fail(origin, "assignment must be an object")
        for key, expected in _RULE.items():
            if key in rule and rule[key] != expected:
                raise _fail(origin, f"assignment.{key} is {rule[key]!r}; this client implements {expected!r}")
    active, canary, shadow = (None if doc.get(role) is None else _bundle(origin, role, doc[role])
                              for role in ("active", "canary", "shadow"))
    if active is None and (canary or shadow):
        raise _fail(origin, "a canary or shadow needs an active version")
    segment = _segment(origin, doc.get("canary"))
    _change(origin, doc)
    commit = doc.get("commit") if isinstance(doc.get("commit"), str) else commit
    routes = _routes(origin, doc["routes"]) if "routes" in doc else None
    return _Model(name, active, canary, routing.threshold(canary.percent) if canary else 0,
                  shadow, routing.threshold(shadow.percent) if shadow else 0, commit, origin, {},
                  segment[1] if segment else None, segment[0] if segment else None, routes)



def _routes(origin: str, found: Any) -> dict[str, Route]:
    """The ``routes`` of a document (modelctl.routes.document), validated."""
    if not isinstance(found, dict):
        raise _fail(origin, "routes must be an object")
    out: dict[str, Route] = {}
    for rname, entry in found.items():
        where = f"routes.{rname}"
        if not isinstance(rname, str) or not _NAME_RE.match(rname):
            raise _fail(origin, f"route name {rname!r} is not a DNS label")
        if not isinstance(entry, dict):
            raise _fail(origin, f"{where} must be an object")
        if entry.get("active") is None:
            raise _fail(origin, f"{where}.active must be a resolved bundle")
        active = _bundle(origin, f"{where}.active", entry["active"])
        canary = None if entry.get("canary") is None else _bundle(origin, f"{where}.canary", entry["canary"])
        if not isinstance(entry.get("follows_model", False), bool):
            raise _fail(origin, f"{where}.follows_model must be true or false")
        fallback = entry.get("fallback")
        policy, chain = None, ()
        if fallback is not None:
            if not isinstance(fallback, dict) or fallback.get("policy") not in ("ordered", "weighted"):
                raise _fail(origin, f"{where}.fallback.policy must be ordered or weighted")
            links = fallback.get("chain")
            weighted = fallback["policy"] == "weighted"
            if not isinstance(links, list) or not links or not all(
                    isinstance(e, dict) and isinstance(e.get("provider"), str) and isinstance(e.get("id"), str)
                    and (not weighted or (type(e.get("weight")) is int and e["weight"] >= 1)) for e in links):
                raise _fail(origin, f"{where}.fallback.chain must list {{provider, id}}"
                                    + (" with a whole weight >= 1" if weighted else ""))
            policy, chain = fallback["policy"], _freeze(links)
        seg = _segment(origin, entry.get("canary")) if canary is not None else None
        out[rname] = Route(active, canary, routing.threshold(canary.percent) if canary else 0, policy, chain,
                           seg[1] if seg else None, seg[0] if seg else None)
    return out


def _parse(raw: bytes, origin: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # a truncated file lands here
        raise _fail(origin, f"not valid JSON ({exc})") from None


# -- sources: where documents come from, and a cheap "has it changed" stamp -----------------------

class FileSource:
    """One routing document in a JSON file (a symlink into a ConfigMap's ``..data`` is followed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def stamp(self) -> Any:
        """Inode, mtime and size of the file the path leads to (one stat)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> tuple[Any, list[tuple[str, Any]], str | None]:
        """(stamp, [(origin, raw bytes)], commit)."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())  # the stamp of exactly the bytes read
                raw = f.read()
        except OSError as exc:
            raise _fail(self.path, f"cannot be read ({exc.strerror})") from None
        return (st.st_ino, st.st_mtime_ns, st.st_size), [(self.path, raw)], None


class DirectorySource:
    """A directory of routing documents, one per model; dotfiles are ignored.

    In a mounted ConfigMap the visible files are symlinks into ``..data/``, itself a symlink to a
    timestamped directory that the kubelet replaces atomically. Files are read from the directory
    ``..data`` points to, resolved once, so one load never mixes two versions of the ConfigMap.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def _target(self) -> str | None:
        try:
            return os.readlink(os.path.join(self.path, DATA_LINK))
        except OSError:
            return None

    def stamp(self) -> Any:
        """The ``..data`` link's target (one readlink); else every file's name, inode, mtime and size."""
        target = self._target()
        if target is not None:
            return ("..data", target)
        try:
            return tuple(sorted((e.name, st.st_ino, st.st_mtime_ns, st.st_size)
                                for e in os.scandir(self.path) if not e.name.startswith(".")
                                for st in (e.stat(),)))
        except OSError:
            return None

    def load(self) -> tuple[Any, list[tuple[str, Any]], str | None]:
        """(stamp, [(origin, raw bytes)], commit)."""
        for _ in range(3):  # the kubelet removes an old ..data target right after a swap: read the new one
            target = self._target()
            stamp = self.stamp() if target is None else ("..data", target)
            base = self.path if target is None else os.path.join(self.path, target)
            try:
                return stamp, self._read(base), None
            except FileNotFoundError as exc:
                if target is None:
                    raise _fail(self.path, f"{exc.filename} vanished while it was read") from None
        raise _fail(self.path, "kept changing while it was read")

    def _read(self, base: str) -> list[tuple[str, Any]]:
        docs: list[tuple[str, Any]] = []
        try:
            entries = sorted((e.name, e.is_dir()) for e in os.scandir(base) if not e.name.startswith("."))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _fail(base, f"cannot be listed ({exc.strerror})") from None
        for name, is_dir in entries:
            if is_dir:
                continue
            path = os.path.join(base, name)
            origin = os.path.join(self.path, name)
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise _fail(origin, f"cannot be read ({exc.strerror})") from None
            docs.append((origin, raw))
        return docs


class GitSource:
    """Every model's routing document from a registry at a git ref (``Registry.resolve``)."""

    def __init__(self, path: str | os.PathLike[str], ref: str = "HEAD") -> None:
        from .registry import Registry  # git plumbing only for this source

        self.registry = Registry(path)
        self.ref = ref
        self.path = str(self.registry.root)

    def stamp(self) -> Any:
        """The commit the ref names (runs git once)."""
        return self.registry.snapshot(self.ref).commit

    def load(self) -> tuple[Any, list[tuple[str, Any]], str | None]:
        """(commit, [(origin, document)], commit): the models with a deployment file at that commit."""
        reg = self.registry
        snap = reg.snapshot(self.ref)
        commit = snap.commit
        assert commit is not None  # Registry.snapshot refuses a ref that names no commit
        docs: list[tuple[str, Any]] = []
        for name in reg.models(snap):
            if reg.deployment(name, snap) is None:  # registered but never deployed: nothing to route
                continue
            docs.append((f"{self.path}@{commit[:12]}:{name}", reg.resolve(name, ref=commit)))
        return commit, docs, commit


class Router:
    """Thread-safe picks over the latest good snapshot of a source; reloads swap whole snapshots."""

    def __init__(self, source: FileSource | DirectorySource | GitSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self.error: Exception | None = None  # why the last reload kept the previous snapshot
        self._failed_stamp: Any = None
        self.reloads = 0
        self._snapshot = self._build()  # the first load raises: there is nothing to fall back to

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Router:
        """A router over one routing-document JSON file."""
        return cls(FileSource(path))

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Router:
        """A router over a directory of routing documents (e.g. a mounted ConfigMap)."""
        return cls(DirectorySource(path))

    @classmethod
    def from_registry(cls, path: str | os.PathLike[str], ref: str = "HEAD") -> Router:
        """A router over every deployed model of a registry clone at a git ref."""
        return cls(GitSource(path, ref))

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot: hold it to make several picks that agree with each other."""
        return self._snapshot

    def pick(self, model: str, key: str, *, route: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> Pick:
        """The version serving ``key`` for ``model`` (on ``route``) now (see :meth:`Snapshot.pick`)."""
        return self._snapshot.pick(model, key, route=route, attributes=attributes)

    def _build(self) -> Snapshot:
        stamp, docs, commit = self.source.load()
        previous = getattr(self, "_snapshot", None)
        known = previous.compiled if previous is not None else {}
        models: dict[str, _Model] = {}
        compiled: dict[tuple[str, bytes], _Model] = {}
        for origin, payload in docs:
            if isinstance(payload, bytes):
                # a ConfigMap update usually changes one model: reuse what the same bytes compiled to
                m = known.get((origin, payload)) or compile_document(_parse(payload, origin), origin, commit)
                compiled[(origin, payload)] = m
            else:
                m = compile_document(payload, origin, commit)
            if m.name in models:
                raise _fail(origin, f"model {m.name} is also defined in {models[m.name].origin}")
            models[m.name] = m
        return Snapshot(models, stamp, commit, self.source.path, compiled)

    def reload(self) -> Snapshot:
        """Read the source again and swap the new snapshot in; on error keep the old one, record it, raise."""
        with self._lock:
            return self._reload()

    def _reload(self) -> Snapshot:
        before = self.source.stamp()  # taken first: a change during the load is retried, not remembered as bad
        try:
            snap = self._build()
        except Exception as exc:
            self.error, self._failed_stamp = exc, before
            raise
        self._snapshot = snap  # one reference assignment: readers see the old or the new, never a mix
        self.error, self._failed_stamp = None, None
        self.reloads += 1
        return snap

    def maybe_reload(self) -> bool:
        """Reload when the source's stamp changed; never raises and never waits for another reload.

        Cheap enough to call per request for files and ConfigMap directories (one stat or readlink);
        a git source runs ``git`` each time, so call it from a timer there. Returns True on a swap.
        """
        stamp = self.source.stamp()
        if stamp == self._snapshot.stamp or stamp == self._failed_stamp:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another thread is reloading already
        try:
            if self.source.stamp() == self._snapshot.stamp:
                return False
            self._reload()
            return True
        except Exception:  # recorded in self.error; the previous snapshot keeps serving
            return False
        finally:
            self._lock.release()

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot.models())
