"""The read side of a registry clone, below `ops`: where the registry is, a snapshot at a ref, and
modelctl.yaml, deployments and bundles as validated data; the versions map of a deployment file
(compact on disk, whole in memory). Reads committed state only, never the work tree.

`ops` plans writes on what this module reads; the public `Registry` (registry.py) adds the read
documents (status, show, ...) and the write methods on top.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from . import bundle as bundlemod
from . import config as configmod
from . import schema, yamlio
from .errors import NotFound, UsageError, ValidationError
from .names import NAME_RE, check_name
from .state import bundle_versions, compact_versions, expand_versions, version_key  # noqa: F401 (API)
from .store import Snapshot, Store


def find_root(path: str | os.PathLike[str] | None) -> Path:
    """The top of the git work tree containing `path` (a registry), or a clear error."""
    return _locate(path)[0]


def _locate(path: str | os.PathLike[str] | None) -> tuple[Path, Store]:
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


def dump_deployment(dep: dict[str, Any], previous: bytes | None, path: str, store: Store) -> bytes:
    """deployments/NAME.yaml as written (compact, comments kept); refused when it could not be read back."""
    wanted = compact_versions(dep)
    text = yamlio.dumps(wanted, previous.decode("utf-8") if previous else None).encode("utf-8")
    if len(text) > yamlio.MAX_BYTES:
        raise ValidationError(
            f"{path} would be {len(text)} bytes, above the {yamlio.MAX_BYTES} modelctl reads back; nothing was written",
            hint="archive versions that no longer serve ('modelctl promote NAME VERSION --to archived')")
    return read_back(text, wanted, path, store, "Deployment")


def read_back(text: bytes, wanted: dict[str, Any], path: str, store: Store, kind: str) -> bytes:
    """The bytes a write is about to commit, read back as every command reads them: they must give
    the document meant (else a defect of modelctl's own is refused, nothing written).

    When the write has loaded jsonschema anyway (register validates the bundle; a file another
    clone wrote was validated on the way), they are also validated as `kind` now and remembered
    as valid (schema.ValidCache), so the next `show`, `status` or write in this clone does not
    validate them again; otherwise the first reader does.
    """
    try:
        doc = yamlio.loads(text, path)
        if doc.data != wanted:
            raise ValidationError("it reads back as a different document")
        if "jsonschema" in sys.modules:
            cache = schema.ValidCache(store, kind)
            cache.validate(doc, schema.blob_id(text))
            cache.save()
    except ValidationError as exc:
        raise ValidationError(f"{path} as it would be written does not read back ({exc.message}); nothing was written",
                              hint="report this; run 'modelctl doctor' to see the registry's state") from None
    return text


def load_deployment(snap: Snapshot, name: str, raw: bytes | None = None) -> dict[str, Any] | None:
    """deployments/NAME.yaml at a snapshot, validated (once per content and clone: schema.ValidCache),
    with its whole versions map; None when absent."""
    path = deployment_path(name)
    raw = snap.read(path) if raw is None else raw
    if raw is None:
        return None
    data = _validated(snap, raw, path, "Deployment")
    return expand_versions(data, bundle_versions(snap.list(f"bundles/{name}")))


def _validated(snap: Snapshot, raw: bytes, path: str, kind: str) -> dict[str, Any]:
    """A file's bytes parsed strictly and validated as `kind`, unless this clone already found
    these very bytes valid (then jsonschema is not even imported)."""
    cache = schema.ValidCache(snap.store, kind)
    data = cache.validate(yamlio.loads(raw, path), schema.blob_id(raw))
    cache.save()
    return data


class Reader:
    """A registry clone's committed state: a git work tree with modelctl.yaml at its top."""

    def __init__(self, path: str | os.PathLike[str] | None = None, ref: str | None = None) -> None:
        """The registry around `path` (a work tree, or a bare repository for reading); `ref` is what
        every read defaults to (a branch, tag or commit, e.g. "origin/main"), HEAD when not given."""
        self.root, self.store = _locate(path)
        self.ref = ref or "HEAD"
        if ref is not None:
            self.snapshot()  # a ref that names nothing is refused now, not at the first read

    def at(self, ref: str | None) -> str:
        """The ref a read uses: the one given, else the registry's default."""
        return ref or self.ref

    def snapshot(self, ref: str | None = None) -> Snapshot:
        """The registry at a ref (default: the one it was opened at); refuses a repository that is not a registry."""
        ref = self.at(ref)
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

    def config(self, snap: Snapshot | None = None) -> configmod.Config:
        """modelctl.yaml merged over the defaults, typed and frozen (parsed once per content and clone)."""
        return configmod.load(snap or self.snapshot())

    @staticmethod
    def load_yaml(snap: Snapshot, path: str, kind: str | None = None) -> dict[str, Any] | None:
        """A YAML file at a snapshot (strict, schema-validated when kind is given), or None."""
        raw = snap.read(path)
        if raw is None:
            return None
        return _validated(snap, raw, path, kind) if kind else yamlio.loads(raw, path).data

    def deployment(self, name: str, snap: Snapshot | None = None) -> dict[str, Any] | None:
        """deployments/<name>.yaml with its whole versions map, or None before the first registration."""
        return load_deployment(snap or self.snapshot(), check_name(name))

    def bundle(self, name: str, version: str, snap: Snapshot | None = None) -> dict[str, Any]:
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
