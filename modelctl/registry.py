"""`modelctl.Registry`: the Python API over one registry clone (the CLI is a thin layer on it).

Read methods take an optional `ref` and read committed state only (never the work tree), so a
half-edited file in someone's checkout never changes what `status` or `resolve` says.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import bundle as bundlemod
from . import config as configmod
from . import schema, yamlio
from .errors import NotFound, UsageError, ValidationError
from .names import NAME_RE, check_name, check_version, semver_key
from .store import Snapshot, Store

API_SCHEMA = "modelctl/v1"


def find_root(path: str | os.PathLike | None) -> Path:
    """The top of the git work tree containing `path` (a registry), or a clear error."""
    return _locate(path)[0]


def _locate(path: str | os.PathLike | None) -> tuple[Path, Store]:
    """(top of the work tree, a Store there that has learnt the repository's layout)."""
    start = Path(path or os.environ.get("MODELCTL_REGISTRY") or ".").resolve()
    if not start.is_dir():
        raise UsageError(f"registry directory {str(start)!r} does not exist", hint="pass --registry DIR")
    probe = Store(start)
    top = probe.locate()
    if top is None:
        raise UsageError(f"{start} is not inside a git repository",
                         hint="run 'modelctl init DIR' or pass --registry DIR")
    store = Store(top)
    store.adopt(probe)
    return top, store


def deployment_path(name: str) -> str:
    return f"deployments/{check_name(name)}.yaml"


# -- the versions map of a deployment file ------------------------------------------------------
# A model may have thousands of versions; its deployment file must stay small (GitOps controllers
# sync it, reviewers read it) and always under the size modelctl reads back. So the file lists
# only what a reader needs: `versions:` names the versions whose status is neither `registered`
# nor `archived`; a version with a bundle under bundles/NAME/ that is not listed is `registered`;
# archived versions are runs of consecutive bundle versions (SemVer order) in `archived:`, e.g.
# ["1.0.0..1.4.7", "2.0.1"]. In memory the map is always whole: `expand_versions` on reading,
# `compact_versions` on writing. Files that list registered and archived versions still load.

def bundle_versions(names: list[str], ordered: bool = True) -> list[str]:
    """Versions from bundle file names (`2.4.0.yaml`), in SemVer order; other names are ignored."""
    from .names import VERSION_RE

    found = [entry[:-5] for entry in names if entry.endswith(".yaml") and VERSION_RE.fullmatch(entry[:-5])]
    return sorted(found, key=_version_key) if ordered else found


def _version_key(version: str) -> tuple:
    """names.semver_key, quicker for the common MAJOR.MINOR.PATCH (ten thousand versions get sorted)."""
    if "-" not in version:
        major, minor, patch = version.split(".")
        return (int(major), int(minor), int(patch), 1, ())
    return semver_key(version)


def expand_versions(dep: dict, bundles: list[str]) -> dict:
    """The deployment with its whole versions map: listed statuses, archived runs, the rest registered."""
    listed = dict(dep.get("versions") or {})
    runs = dep.get("archived") or []
    if not runs and all(v in listed for v in bundles):
        out = dict(dep)
        out.pop("archived", None)
        out["versions"] = listed
        return out
    keys = [_version_key(v) for v in bundles] if runs else []
    archived = set()
    for run in runs:
        lo, _, hi = str(run).partition("..")
        try:
            lo_key, hi_key = semver_key(lo), semver_key(hi or lo)
        except (ValueError, AttributeError):
            continue  # the schema refuses it; a reader never guesses
        archived.update(v for v, k in zip(bundles, keys) if lo_key <= k <= hi_key)
    versions = dict(listed)
    for v in bundles:
        if v not in versions:
            versions[v] = "archived" if v in archived else "registered"
    out = {k: val for k, val in dep.items() if k != "archived"}
    out["versions"] = versions
    return out


def compact_versions(dep: dict) -> dict:
    """The deployment as written: registered versions left out, archived ones as runs (see above)."""
    versions = dep.get("versions") or {}
    ordered = sorted(versions, key=_version_key) if "archived" in versions.values() else []
    runs: list[list[str]] = []
    prev_archived = False
    for v in ordered:
        if versions[v] == "archived":
            if prev_archived:
                runs[-1][1] = v
            else:
                runs.append([v, v])
        prev_archived = versions[v] == "archived"
    out = {k: val for k, val in dep.items() if k not in ("versions", "archived", "hold")}
    out["versions"] = {v: s for v, s in versions.items() if s not in ("registered", "archived")}
    if runs:
        out["archived"] = [lo if lo == hi else f"{lo}..{hi}" for lo, hi in runs]
    if "hold" in dep:
        out["hold"] = dep["hold"]  # keep hold last, where earlier versions of modelctl wrote it
    return out


def dump_deployment(dep: dict, previous: bytes | None, path: str) -> bytes:
    """deployments/NAME.yaml as written (compact, comments kept); refused when it could not be read back."""
    text = yamlio.dumps(compact_versions(dep), previous.decode("utf-8") if previous else None).encode("utf-8")
    if len(text) > yamlio.MAX_BYTES:
        raise ValidationError(
            f"{path} would be {len(text)} bytes, above the {yamlio.MAX_BYTES} modelctl reads back; nothing was written",
            hint="archive versions that no longer serve ('modelctl promote NAME VERSION --to archived')")
    return text


def load_deployment(snap: Snapshot, name: str, raw: bytes | None = None, oid: str | None = None,
                    cache: "schema.ValidCache | None" = None) -> dict | None:
    """deployments/NAME.yaml at a snapshot, validated, with its whole versions map; None when absent."""
    path = deployment_path(name)
    raw = snap.read(path) if raw is None else raw
    if raw is None:
        return None
    doc = yamlio.loads(raw, path)
    data = cache.validate(doc, oid) if cache is not None else schema.validate(doc, "Deployment")
    return expand_versions(data, bundle_versions(snap.list(f"bundles/{name}")))


class Registry:
    """A modelctl registry: a git work tree with modelctl.yaml at its top."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.root, self.store = _locate(path)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self, ref: str = "HEAD") -> Snapshot:
        """The registry at a ref; refuses a repository that is not a registry."""
        snap = self.store.snapshot(ref)
        if snap.commit is None:
            why = self.store.unborn() if ref == "HEAD" else None
            if why:
                raise UsageError(why)
            raise UsageError(f"{ref} does not name a commit in {self.root}",
                             hint="run 'modelctl init' first" if ref == "HEAD" else "pass an existing ref")
        if len(snap.commit) != 40:  # free to check: a sha256 repository names commits with 64 hex digits
            raise UsageError(f"{self.root} is a git repository with sha256 object names, which modelctl does not "
                             "support",
                             hint="keep the registry in a sha1 repository ('git init --object-format=sha1')")
        if snap.read(configmod.CONFIG_FILE) is None:
            raise UsageError(f"{self.root} is not a modelctl registry (no modelctl.yaml at {ref})",
                             hint="run 'modelctl init' in an empty directory, or pass --registry DIR")
        return snap

    def config(self, snap: Snapshot | None = None) -> dict:
        """modelctl.yaml merged over the defaults."""
        return configmod.load(snap or self.snapshot())

    @staticmethod
    def load_yaml(snap: Snapshot, path: str, kind: str | None = None) -> dict | None:
        """A YAML file at a snapshot (strict, schema-validated when kind is given), or None."""
        raw = snap.read(path)
        if raw is None:
            return None
        doc = yamlio.loads(raw, path)
        return schema.validate(doc, kind) if kind else doc.data

    def deployment(self, name: str, snap: Snapshot | None = None) -> dict | None:
        """deployments/<name>.yaml with its whole versions map, or None before the first registration."""
        return load_deployment(snap or self.snapshot(), check_name(name))

    def bundle(self, name: str, version: str, snap: Snapshot | None = None) -> dict:
        """A registered bundle, or NotFound listing what exists."""
        snap = snap or self.snapshot()
        data = self.load_yaml(snap, bundlemod.bundle_path(name, version), "Bundle")
        if data is None:
            known = self.versions(name, snap)
            if not known:
                raise NotFound(f"no model named {name!r} in this registry",
                               hint="see 'modelctl status' for the models it has")
            raise NotFound(f"{name} has no version {version}", hint="known versions: " + ", ".join(known[-8:]))
        return data

    def versions(self, name: str, snap: Snapshot | None = None) -> list[str]:
        """Registered versions of a model, in SemVer order."""
        snap = snap or self.snapshot()
        return bundle_versions(snap.list(f"bundles/{check_name(name)}"))

    def models(self, snap: Snapshot | None = None) -> list[str]:
        """Every model with a bundle or a deployment file."""
        snap = snap or self.snapshot()
        names = set(n for n in snap.list("bundles") if NAME_RE.fullmatch(n))
        names |= {n[:-5] for n in snap.list("deployments") if n.endswith(".yaml") and NAME_RE.fullmatch(n[:-5])}
        return sorted(names)

    def status(self, name: str | None = None, ref: str = "HEAD") -> dict:
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
        rows = []
        for n, path in zip(names, paths):
            bundles = bundle_versions(listed.get(n, []), ordered=False)
            if raw[path] is None:
                if name is not None:
                    raise NotFound(f"no model named {name!r} in this registry",
                                   hint="see 'modelctl status' for the models it has")
                dep = {"active": None, "canary": None, "shadow": None, "versions": {}}
            else:
                dep = cache.validate(yamlio.loads(raw[path], path), ids.get(path))
            versions = set(bundles) | set(dep.get("versions") or {})
            latest = max(versions, key=_version_key) if versions else None
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
        return {"schema": API_SCHEMA, "commit": snap.commit, "models": rows}

    def show(self, name: str, version: str | None = None, ref: str = "HEAD") -> dict:
        """One model's versions with status, model id, prompt hash, who registered when; or one bundle."""
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
        dep = dep_cache.validate(yamlio.loads(raw[dep_path], dep_path), ids.get(dep_path)) if raw[dep_path] else {}
        dep_cache.save()
        statuses = expand_versions(dep, versions)["versions"] if dep else {}
        tagged = self.store.registrations(name)
        summaries = _Summaries(self.store)
        found = summaries.get({v: blob_ids[f"{v}.yaml"] for v in versions}, name)
        rows = []
        for v in versions:
            at, by = tagged.get(f"{name}@v{v}", (0, None))
            parent, provider, model, adapter, prompt, sha = found[v]
            rows.append({"version": v, "status": statuses.get(v, "registered"), "parent": parent,
                         "provider": provider, "model": model, "adapter": adapter, "prompt": prompt,
                         "prompt_sha256": sha, "registered_at": _iso(at) if at else None, "registered_by": by})
        return {"schema": API_SCHEMA, "name": name, "active": dep.get("active"), "canary": dep.get("canary"),
                "shadow": dep.get("shadow"), "versions": rows}

    def diff(self, name: str, v1: str, v2: str, ref: str = "HEAD") -> dict:
        """Field-by-field difference of two bundles, grouped as model, prompt, config, data, baseline."""
        check_name(name), check_version(v1), check_version(v2)
        snap = self.snapshot(ref)
        a, b = self.bundle(name, v1, snap), self.bundle(name, v2, snap)
        return {"schema": API_SCHEMA, "name": name, "from": v1, "to": v2, **bundle_diff(a, b)}

    # -- routing and history ------------------------------------------------------------------
    def resolve(self, name: str, key: str | None = None, ref: str = "HEAD") -> dict:
        """The routing document a gateway needs; with `key`, also the version that serves that key."""
        from . import routing

        check_name(name)
        snap = self.snapshot(ref)
        dep = self.deployment(name, snap)
        if dep is None:
            raise NotFound(f"no model named {name!r} in this registry",
                           hint="see 'modelctl status' for the models it has")
        named = [dep.get("active")] + [(dep.get(s) or {}).get("version") for s in ("canary", "shadow")]
        bundles = {v: self.bundle(name, v, snap) for v in named if v}
        doc = {**routing.routing_document(dep, bundles), "commit": snap.commit}
        if key is not None:
            served = routing.assign(dep, key)
            live = dep.get("canary") or None
            role = None if served is None else (
                "canary" if live and live.get("version") == served else "active")
            doc["key"] = {"key": key, "bucket": routing.bucket(name, key), "version": served, "role": role}
        return doc

    def log(self, name: str, limit: int | None = None, ref: str = "HEAD") -> dict:
        """Every event of a model from git history, newest first: who, when, what, why, on what evidence."""
        from . import history

        check_name(name)
        self.snapshot(ref)
        self.store.require_full_history(f"the history of {name}")
        return {"schema": API_SCHEMA, **history.log(self.store, name, ref, limit)}

    def which(self, name: str, at: str | int, key: str | None = None, ref: str = "HEAD") -> dict:
        """What served a model at a time (ISO 8601 or unix seconds), and with `key`, which version served it."""
        from . import history

        check_name(name)
        self.snapshot(ref)
        self.store.require_full_history(f"what served {name} at a time")

        def read(commit: str) -> dict | None:
            return self.deployment(name, self.store.snapshot(commit))

        return {"schema": API_SCHEMA, **history.which(self.store, read, name, at, key, ref)}

    # -- writing (the CLI's write commands, for scripts) --------------------------------------
    # Each takes the command's options as keywords, plus push=True/False and branch="name".
    def register(self, file: str | os.PathLike, **kwargs):
        """Register a bundle file (see `ops.register` for the keyword arguments); returns the Outcome."""
        from . import ops

        return ops.register(self, file, **_write_kwargs(kwargs))

    def promote(self, name: str, version: str, to: str, **kwargs):
        """Move a version to a stage or retire it (`ops.promote`)."""
        from . import ops

        return ops.promote(self, name, version, to, **_write_kwargs(kwargs))

    def shadow(self, name: str, version: str, percent: float | None = None, **kwargs):
        """Mirror a share of traffic to a version (`ops.shadow`)."""
        from . import ops

        return ops.shadow(self, name, version, percent, **_write_kwargs(kwargs))

    def canary(self, name: str, version: str, percent: float | None = None, **kwargs):
        """Start a canary or change its percent (`ops.canary`)."""
        from . import ops

        return ops.canary(self, name, version, percent, **_write_kwargs(kwargs))

    def rollback(self, name: str, **kwargs):
        """Pull the canary, or return active to previous (`ops.rollback`)."""
        from . import ops

        return ops.rollback(self, name, **_write_kwargs(kwargs))


def _write_kwargs(kwargs: dict) -> dict:
    """`push=` and `branch=` keywords folded into the WriteOptions the ops take."""
    from .ops import WriteOptions

    push, branch = kwargs.pop("push", None), kwargs.pop("branch", None)
    if push is not None or branch is not None:
        if kwargs.get("opts") is not None:
            raise UsageError("pass either opts= or push=/branch=, not both")
        kwargs["opts"] = WriteOptions(push=push, branch=branch)
    return kwargs


def bundle_diff(a: dict, b: dict) -> dict:
    """Which of model, prompt, config, data, eval, baseline, fallbacks changed, field by field."""
    sections = {}
    for section in ("model", "prompt", "config", "data", "eval", "baseline", "fallbacks"):
        rows = []
        _walk_diff(a.get(section), b.get(section), section, rows)
        sections[section] = rows
    changed = [s for s, rows in sections.items() if rows]
    change = bundlemod.classify(a, b) if a.get("model") and b.get("model") else None
    return {"changed": changed, "fields": sections, "semver": change.level if change else None}


def _walk_diff(x, y, path: str, out: list) -> None:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in list(x) + [k for k in y if k not in x]:
            _walk_diff(x.get(key), y.get(key), f"{path}.{key}", out)
    elif x != y:
        out.append({"field": path, "from": x, "to": y})


def _iso(ts: int) -> str:
    """Unix seconds as ISO 8601 UTC (the date part from a per-day cache: `show` formats thousands)."""
    day, sec = divmod(int(ts), 86400)
    date = _DAYS.get(day)
    if date is None:
        import time

        date = _DAYS[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
    return f"{date}T{sec // 3600:02d}:{sec % 3600 // 60:02d}:{sec % 60:02d}Z"


_DAYS: dict[int, str] = {}


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

    def get(self, oids: dict[str, str], name: str) -> dict[str, list]:
        """version -> [parent, provider, model, adapter, prompt, prompt_sha256], reading and validating
        only bundles not seen before."""
        import json

        known: dict[str, list] = {}
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        chunk = json.loads(line)
                    except ValueError:
                        continue  # a torn append: those bundles are read again
                    if isinstance(chunk, dict):
                        known.update(chunk)
        except (OSError, UnicodeDecodeError):
            pass
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
            try:  # best effort: a read-only clone just stays slower
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(learnt, separators=(",", ":")) + "\n")
            except OSError:
                pass
        return {v: known[o] for v, o in oids.items()}
