"""`modelctl.Registry`: the Python API over one registry clone (the CLI is a thin layer on it).

Read methods take an optional `ref` and read committed state only (never the work tree), so a
half-edited file in someone's checkout never changes what `status` or `resolve` says.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, cast

from . import bundle as bundlemod
from . import schema, yamlio
from .bundle import bundle_diff
from .errors import NotFound, UsageError
from .names import check_name, check_version
from .reader import Reader, deployment_path, find_root, load_deployment  # noqa: F401 (API)
from .state import bundle_versions, expand_versions, version_key  # noqa: F401 (API)
from .store import Store, append_json_line, read_json_lines

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from collections.abc import Mapping

    from .documents import (
        CompatDocument,
        CompatRow,
        DiffDocument,
        LogDocument,
        ResolveDocument,
        ShowDocument,
        ShowVersion,
        StatusDocument,
        StatusRow,
        WhichDocument,
    )
    from .store import Outcome

API_SCHEMA = "modelctl/v1"


class Registry(Reader):
    """A modelctl registry: the read documents of the CLI (status, show, diff, resolve, log, which)
    and its write commands, for scripts."""

    def status(self, name: str | None = None, ref: str | None = None) -> StatusDocument:
        """Every model (or one): active, canary and percent, shadow, newest registered version."""
        snap = self.snapshot(ref)
        names = [check_name(name)] if name is not None else self.models(snap)
        paths = [deployment_path(n) for n in names]
        ids: dict[str, str] = {}
        raw = self.store.read_many(snap.commit, paths, ids)
        # every model's bundle names in one listing (registered versions are not in the files)
        listed: dict[str, list[str]] = {}
        for path in self.store.list_files(snap.commit, f"bundles/{name}" if name is not None else "bundles"):
            parts = path.split("/")
            if len(parts) == 3:
                listed.setdefault(parts[1], []).append(parts[2])
        cache = schema.ValidCache(self.store, "Deployment")
        rows: list[StatusRow] = []
        for n, path in zip(names, paths):
            bundles = bundle_versions(listed.get(n, []), ordered=False)
            text = raw[path]
            dep: dict[str, Any]
            if text is None:
                if name is not None:
                    raise NotFound(f"no model named {name!r} in this registry",
                                   hint="see 'modelctl status' for the models it has")
                dep = {"active": None, "canary": None, "shadow": None, "versions": {}}
            else:
                dep = cache.validate(yamlio.loads(text, path), ids.get(path))
            versions = set(bundles) | set(dep.get("versions") or {})
            latest = max(versions, key=version_key) if versions else None
            rows.append({
                "name": n,
                "active": dep.get("active"),
                "previous": dep.get("previous"),
                "canary": dep.get("canary"),
                "shadow": dep.get("shadow"),
                "hold": dep.get("hold"),
                "latest": latest,
                "versions": len(versions),
            })
        cache.save()
        assert snap.commit is not None  # snapshot() refuses a ref that names no commit
        return {"schema": API_SCHEMA, "commit": snap.commit, "models": rows}

    def show(self, name: str, version: str | None = None, ref: str | None = None) -> ShowDocument:
        """One model's versions with status, model id, prompt hash, who registered when; or one bundle."""
        from .history import iso

        check_name(name)
        snap = self.snapshot(ref)
        if version is not None:
            check_version(version)
            data = self.bundle(name, version, snap)
            dep = self.deployment(name, snap) or {}
            return {"schema": API_SCHEMA, "name": name, "version": version,
                    "status": dep.get("versions", {}).get(version, "registered"), "bundle": data}
        blob_ids = self.store.list_ids(snap.commit, f"bundles/{name}")
        versions = bundle_versions(list(blob_ids))
        if not versions:
            raise NotFound(f"no model named {name!r} in this registry",
                           hint="see 'modelctl status' for the models it has")
        dep_path = deployment_path(name)
        ids: dict[str, str] = {}
        raw = self.store.read_many(snap.commit, [dep_path], ids)
        # validate-once cache: an unchanged file is not re-validated (nor jsonschema imported)
        dep_cache = schema.ValidCache(self.store, "Deployment")
        dep_text = raw[dep_path]
        dep = dep_cache.validate(yamlio.loads(dep_text, dep_path), ids.get(dep_path)) if dep_text else {}
        dep_cache.save()
        statuses = expand_versions(dep, versions)["versions"] if dep else {}
        tagged = self.store.registrations(name)
        summaries = _Summaries(self.store)
        found = summaries.get({v: blob_ids[f"{v}.yaml"] for v in versions}, name)
        rows: list[ShowVersion] = []
        for v in versions:
            at, by = tagged.get(f"{name}@v{v}", (0, None))
            parent, provider, model, adapter, prompt, sha = found[v]
            rows.append({"version": v, "status": statuses.get(v, "registered"), "parent": parent,
                         "provider": provider, "model": model, "adapter": adapter, "prompt": prompt,
                         "prompt_sha256": sha, "registered_at": iso(at) if at else None, "registered_by": by})
        return {"schema": API_SCHEMA, "name": name, "active": dep.get("active"), "canary": dep.get("canary"),
                "shadow": dep.get("shadow"), "versions": rows}

    def diff(self, name: str, v1: str, v2: str, ref: str | None = None) -> DiffDocument:
        """Field-by-field difference of two bundles, grouped as model, prompt, config, data, baseline."""
        check_name(name), check_version(v1), check_version(v2)
        snap = self.snapshot(ref)
        a, b = self.bundle(name, v1, snap), self.bundle(name, v2, snap)
        return {"schema": API_SCHEMA, "name": name, "from": v1, "to": v2, **bundle_diff(a, b)}

    # -- routing and history ------------------------------------------------------------------
    def resolve(self, name: str, key: str | None = None, ref: str | None = None, *,
                route: str | None = None, attributes: Mapping[str, str] | None = None) -> ResolveDocument:
        """The routing document a gateway needs; with `key`, also the version that serves that key
        (on `route` when given: modelctl.routes; for a request with caller `attributes`, which decide
        a canary limited to a segment)."""
        from . import manifests, routes, routing
        from .segments import rules_of

        check_name(name)
        if route is not None:
            routes.check_route(route)
        snap = self.snapshot(ref)
        dep = self.deployment(name, snap)
        if dep is None:
            raise NotFound(f"no model named {name!r} in this registry",
                           hint="see 'modelctl status' for the models it has")
        if route is not None:
            routes.route_of(dep, route)  # exit 2 for an undeclared route, before anything is read
        bundles = {v: self.bundle(name, v, snap) for v in manifests.served_versions(dep)}
        assert snap.commit is not None  # snapshot() refuses a ref that names no commit
        rules = rules_of(self.config(snap).as_dict()) if (dep.get("canary") or {}).get("segment") else {}
        routed = routing.routing_document(dep, bundles, segments=rules)
        doc: ResolveDocument = {"schema": routed["schema"], "name": routed["name"], "active": routed["active"],
                                "canary": routed["canary"], "shadow": routed["shadow"],
                                "assignment": routed["assignment"], "commit": snap.commit}
        if "change" in routed:
            doc["change"] = routed["change"]
        if "routes" in routed:
            doc["routes"] = routed["routes"]
        if key is not None:
            served = routing.assign(dep, key, route=route, attributes=attributes, segments=rules)
            live = routes.effective(dep, route)[1] if route is not None else dep.get("canary") or None
            role: Literal["active", "canary"] | None = None if served is None else (
                "canary" if live and live.get("version") == served else "active")
            doc["key"] = {"key": key, "bucket": routing.bucket(name, key), "version": served, "role": role}
            if attributes:
                doc["key"]["attributes"] = dict(attributes)
            if route is not None:
                doc["key"]["route"] = route
        return doc

    def compat(self, name: str | None = None, ref: str | None = None) -> CompatDocument:
        """Every serving and candidate version's `compatibility:` needs against `platform:` (modelctl.compat)."""
        from . import compat

        snap = self.snapshot(ref)
        platform = self.config(snap).platform.as_dict()
        rows: list[CompatRow] = []
        for model in [check_name(name)] if name else self.models(snap):
            dep = self.deployment(model, snap)
            if dep is None:
                raise NotFound(f"no model named {model!r} in this registry",
                               hint="see 'modelctl status' for the models it has")
            wanted = [v for v, st in (dep.get("versions") or {}).items()
                      if st in compat.SERVING_ROLES + compat.CANDIDATE_ROLES]
            raws = snap.read_many([bundlemod.bundle_path(model, v) for v in wanted])  # one read for all of them
            needs = {v: yamlio.loads(raw, bundlemod.bundle_path(model, v)).data.get("compatibility")
                     for v in wanted if (raw := raws[bundlemod.bundle_path(model, v)]) is not None}
            rows += cast("list[CompatRow]", compat.rows(model, dep, needs, platform))
        return {"platform": platform, "rows": rows, "ok": all(r["compatible"] for r in rows if r["serving"])}

    def log(self, name: str, limit: int | None = None, ref: str | None = None) -> LogDocument:
        """Every event of a model from git history, newest first: who, when, what, why, on what evidence."""
        from . import history

        check_name(name)
        ref = self.at(ref)
        self.snapshot(ref)
        self.store.require_full_history(f"the history of {name}")
        return {"schema": API_SCHEMA, **history.log(self.store, name, ref, limit)}

    def which(self, name: str, at: str | int, key: str | None = None, ref: str | None = None, *,
              route: str | None = None, attributes: Mapping[str, str] | None = None) -> WhichDocument:
        """What served a model at a time (ISO 8601 or unix seconds), and with `key`, which version served it
        (on `route` when given: the route as the deployment file declared it then; to a request with
        caller `attributes`, for a canary limited to a segment)."""
        from . import history
        from .segments import rules_of

        check_name(name)
        ref = self.at(ref)
        self.snapshot(ref)
        self.store.require_full_history(f"what served {name} at a time")

        def read(commit: str) -> dict[str, Any] | None:
            return self.deployment(name, self.store.snapshot(commit))

        def segments(commit: str) -> Mapping[str, Mapping[str, Any]]:
            return rules_of(self.config(self.store.snapshot(commit)).as_dict())

        return {"schema": API_SCHEMA, **history.which(self.store, read, name, at, key, ref, route=route,
                                                      attributes=attributes, read_segments=segments)}

    # -- writing (the CLI's write commands, for scripts) --------------------------------------
    # Each takes the command's options as keywords, plus push=True/False and branch="name".
    def register(self, file: str | os.PathLike[str], **kwargs: Any) -> Outcome:
        """Register a bundle file (see `ops.register` for the keyword arguments); returns the Outcome."""
        from . import ops  # the writes load their machinery only when used: status and show stay light

        return ops.register(self, file, **_write_kwargs(kwargs))

    def promote(self, name: str, version: str, to: str, **kwargs: Any) -> Outcome:
        """Move a version to a stage or retire it (`ops.promote`)."""
        from . import ops

        return ops.promote(self, name, version, to, **_write_kwargs(kwargs))

    def shadow(self, name: str, version: str, percent: float | None = None, **kwargs: Any) -> Outcome:
        """Mirror a share of traffic to a version (`ops.shadow`)."""
        from . import ops

        return ops.shadow(self, name, version, percent, **_write_kwargs(kwargs))

    def canary(self, name: str, version: str, percent: float | None = None, **kwargs: Any) -> Outcome:
        """Start a canary or change its percent (`ops.canary`)."""
        from . import ops

        return ops.canary(self, name, version, percent, **_write_kwargs(kwargs))

    def rollback(self, name: str, **kwargs: Any) -> Outcome:
        """Pull the canary, or return active to previous (`ops.rollback`)."""
        from . import ops

        return ops.rollback(self, name, **_write_kwargs(kwargs))

    def gc(self, name: str | None = None, **kwargs: Any) -> Outcome:
        """Archive the deprecated versions retention lets go, in one commit (`ops.gc`)."""
        from . import ops

        return ops.gc(self, name, **_write_kwargs(kwargs))

    def route(self, name: str, route: str, **kwargs: Any) -> Outcome:
        """Declare a route, set its fallback chain or make it follow the model (`ops.route`)."""
        from . import ops

        return ops.route(self, name, route, **_write_kwargs(kwargs))


def _write_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`push=` and `branch=` keywords folded into the WriteOptions the ops take."""
    from .ops import WriteOptions

    push, branch = kwargs.pop("push", None), kwargs.pop("branch", None)
    if push is not None or branch is not None:
        if kwargs.get("opts") is not None:
            raise UsageError("pass either opts= or push=/branch=, not both")
        kwargs["opts"] = WriteOptions(push=push, branch=branch)
    return kwargs


class _Summaries:
    """What `show` lists of each bundle, remembered by blob id in the git directory.

    Content-addressed like schema.ValidCache (a changed bundle is another blob), so it is never
    stale; a model with ten thousand versions is then listed without parsing ten thousand files.
    The file holds one JSON object per line, {blob id: [parent, provider, model, adapter, prompt,
    prompt_sha256]}, one line per `show` that learnt something: loading it is a few json.loads.
    """

    def __init__(self, store: Store):
        import hashlib

        digest = hashlib.sha256(schema.data_path("schemas", schema.KINDS["Bundle"]).read_bytes()).hexdigest()[:12]
        self.path = store.private_path(f"modelctl-summary-{digest}.jsonl")
        self.store = store

    def get(self, oids: dict[str, str], name: str) -> dict[str, list[Any]]:
        """version -> [parent, provider, model, adapter, prompt, prompt_sha256], reading and validating
        only bundles not seen before."""
        known: dict[str, list[Any]] = read_json_lines(self.path)
        missing = sorted({o for o in oids.values() if o not in known})
        if missing:
            learnt = {}
            cache = schema.ValidCache(self.store, "Bundle")
            blobs = self.store.read_blobs(missing)
            by_oid = {o: v for v, o in oids.items()}
            for oid in missing:
                path = bundlemod.bundle_path(name, by_oid[oid])
                data = cache.validate(yamlio.loads(blobs[oid] or b"", path), oid)
                learnt[oid] = known[oid] = [data.get("parent"), data["model"]["provider"], data["model"]["id"],
                                            data["model"].get("adapter"), data["prompt"]["template"],
                                            data["prompt"].get("sha256")]
            cache.save()
            append_json_line(self.path, learnt)
        return {v: known[o] for v, o in oids.items()}
