"""Rendered manifests for GitOps: each served model's routing document in a Kubernetes ConfigMap.

Pure: the caller reads the registry (deployments, bundles, prompt files) and this module turns it
into the bytes of ``rendered/`` (README "GitOps: Argo CD and Flux"):

- ``<dir>/modelctl-<model>.yaml``: a ConfigMap named ``modelctl-<model>`` whose one data key
  ``<model>.json`` is the routing document ``modelctl resolve <model> --json`` prints, without
  ``commit`` (the rendering is part of that very commit) and with each bundle's prompt text inline
  (``prompt.text``), which is what :mod:`modelctl.serving` loads from a mounted ConfigMap;
- ``<dir>/kustomization.yaml``: the list of those ConfigMaps.

Only models with an active version are rendered: nothing serves the others. Output is
deterministic (sorted keys, fixed formatting, no timestamps): rendering an unchanged registry
gives the same bytes, so a write changes a rendered file only when what serves changed.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import routing
from .errors import ValidationError

KUSTOMIZATION = "kustomization.yaml"
PREFIX = "modelctl-"
MANAGED_BY = "modelctl"
# The API server refuses a ConfigMap whose data is larger than this (etcd's object limit).
MAX_DATA_BYTES = 1024 * 1024
# A model name is a DNS label (names.NAME_RE), so "modelctl-" + name is a valid DNS-1123
# subdomain, unique per model, and no name needs mangling; anything else is refused here.
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
HEADER = "# Rendered by modelctl from the registry; do not edit. To update: modelctl render --write\n"
FORMATS = ("configmap", "json", "litellm")


@dataclass(frozen=True)
class Settings:
    """The `render:` section of modelctl.yaml."""

    enabled: bool = False
    dir: str = "rendered"
    namespace: str | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> Settings:
        """Settings from the typed config (config.load) or a merged modelctl.yaml document."""
        section = (cfg.get("render") if isinstance(cfg, Mapping) else cfg.render.as_dict()) or {}
        return cls(bool(section.get("enabled", False)), str(section.get("dir") or "rendered").strip("/"),
                   section.get("namespace") or None)

    def path(self, name: str) -> str:
        """Where a model's ConfigMap lives: ``<dir>/modelctl-<model>.yaml`` (its metadata.name, so a
        model named "kustomization" cannot collide with the kustomization file)."""
        return f"{self.dir}/{configmap_name(name)}.yaml"

    @property
    def kustomization(self) -> str:
        """Where the kustomization lives in the registry."""
        return f"{self.dir}/{KUSTOMIZATION}"

    def model_of(self, path: str) -> str | None:
        """The model a rendered ConfigMap path belongs to, or None for any other path."""
        prefix = self.dir + "/" + PREFIX
        if not path.startswith(prefix) or not path.endswith(".yaml"):
            return None
        stem = path[len(prefix):-len(".yaml")]
        return stem if _NAME_RE.match(stem) else None


def configmap_name(name: str) -> str:
    """The ConfigMap's metadata.name: ``modelctl-<model>`` (a model name is already a DNS label)."""
    if not _NAME_RE.match(name):
        raise ValidationError(f"{name!r} is not a model name (a DNS label), so it has no ConfigMap name")
    return PREFIX + name


def serves(dep: Mapping[str, Any] | None) -> bool:
    """Whether a deployment has something to render (an active version)."""
    return bool(dep and dep.get("active"))


def served_versions(dep: Mapping[str, Any]) -> list[str]:
    """The versions a model's routing document names (active, canary, shadow)."""
    named = [dep.get("active")] + [(dep.get(role) or {}).get("version") for role in ("canary", "shadow")]
    if dep.get("routes"):
        from . import routes

        named += routes.versions(dep)
    return list(dict.fromkeys(v for v in named if isinstance(v, str) and v))


def prompt_paths(bundles: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The prompt files a set of bundles names (what the caller must read for :func:`document`)."""
    out = {(b.get("prompt") or {}).get("template") for b in bundles.values()}
    return sorted(p for p in out if isinstance(p, str))


def document(dep: Mapping[str, Any], bundles: Mapping[str, Mapping[str, Any]],
             prompts: Mapping[str, bytes | None], *,
             segments: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The rendered routing document: `resolve --json` without `commit`, prompt texts inline.

    ``bundles`` maps each version the deployment names to its bundle; ``prompts`` maps prompt
    paths to their bytes (a prompt that is not UTF-8 is carried with replacement characters; its
    sha256 still names the real bytes). ``segments``: modelctl.yaml's segments.rules (a canary's segment
    rule is inlined).
    """
    doc: dict[str, Any] = dict(routing.routing_document(dict(dep), {v: dict(b) for v, b in bundles.items()},
                                                        segments=segments))
    for role in ("active", "canary", "shadow"):
        entry = doc.get(role)
        if not entry:
            continue
        entry = copy.deepcopy(entry)
        template = entry["prompt"].get("template")
        raw = prompts.get(template) if isinstance(template, str) else None
        if raw is not None:
            entry["prompt"]["text"] = raw.decode("utf-8", errors="replace")
        doc[role] = entry
    for served in (doc.get("routes") or {}).values():  # a route's bundles carry their prompt text too
        for role in ("active", "canary"):
            entry = served.get(role)
            template = entry["prompt"].get("template") if entry else None
            raw = prompts.get(template) if isinstance(template, str) else None
            if entry and raw is not None:
                entry["prompt"]["text"] = raw.decode("utf-8", errors="replace")
    return doc


def _q(text: str) -> str:
    # a JSON string is a valid YAML double-quoted scalar: never read as a number, bool or null
    return json.dumps(text, ensure_ascii=True)


def document_json(doc: Mapping[str, Any]) -> str:
    """The routing document as the ConfigMap carries it: sorted keys, 2-space indent, ASCII, newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


def configmap(name: str, doc: Mapping[str, Any], settings: Settings) -> bytes:
    """One model's ConfigMap manifest (YAML), byte-stable for the same input.

    Written by hand rather than through a YAML library so that the bytes never depend on a
    library's version; every scalar is a JSON string and the document a literal block.
    """
    body = document_json(doc)
    if len(body.encode("utf-8")) > MAX_DATA_BYTES:
        raise ValidationError(f"the routing document of {name} would be {len(body)} bytes, above the 1 MiB a "
                              "Kubernetes ConfigMap holds; nothing was written",
                              hint="shorten its prompts, or set render.enabled: false in modelctl.yaml")
    out = [HEADER, "apiVersion: v1\n", "kind: ConfigMap\n", "metadata:\n",
           f"  name: {_q(configmap_name(name))}\n"]
    if settings.namespace:
        out.append(f"  namespace: {_q(settings.namespace)}\n")
    out += ["  labels:\n",
            f"    app.kubernetes.io/managed-by: {_q(MANAGED_BY)}\n",
            f"    app.kubernetes.io/part-of: {_q('modelctl')}\n",
            f"    modelctl.dev/model: {_q(name)}\n",
            "data:\n",
            f"  {_q(name + '.json')}: |\n"]
    out += [f"    {line}\n" for line in body.splitlines()]
    return "".join(out).encode("utf-8")


def kustomization(names: list[str], settings: Settings) -> bytes:
    """The kustomization listing every rendered ConfigMap file, in name order."""
    out = [HEADER, "apiVersion: kustomize.config.k8s.io/v1beta1\n", "kind: Kustomization\n"]
    files = sorted(f"{configmap_name(n)}.yaml" for n in set(names))
    if files:
        out.append("resources:\n")
        out += [f"  - {_q(f)}\n" for f in files]
    else:
        out.append("resources: []\n")
    return "".join(out).encode("utf-8")


def render_model(name: str, dep: Mapping[str, Any] | None, bundles: Mapping[str, Mapping[str, Any]],
                 prompts: Mapping[str, bytes | None], settings: Settings, *,
                 segments: Mapping[str, Mapping[str, Any]] | None = None) -> bytes | None:
    """A model's ConfigMap file, or None when nothing serves it (its file must not exist)."""
    if not serves(dep):
        return None
    assert dep is not None
    return configmap(name, document(dep, bundles, prompts, segments=segments), settings)


def render_all(deployments: Mapping[str, Mapping[str, Any]],
               bundles: Mapping[tuple[str, str], Mapping[str, Any]],
               prompts: Mapping[str, bytes | None], settings: Settings) -> dict[str, bytes]:
    """Every file of the rendered directory, path -> bytes, for a whole registry."""
    files: dict[str, bytes] = {}
    for name in sorted(deployments):
        dep = deployments[name]
        own = {v: bundles[(name, v)] for v in served_versions(dep) if (name, v) in bundles}
        content = render_model(name, dep, own, prompts, settings)
        if content is not None:
            files[settings.path(name)] = content
    files[settings.kustomization] = kustomization([n for n in deployments if settings.path(n) in files], settings)
    return files


def changes(current: Mapping[str, bytes | None], wanted: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
    """The files to set (bytes) or delete (None) so that ``current`` becomes ``wanted``."""
    return {path: data for path, data in sorted(wanted.items()) if current.get(path) != data}


def multi_document(files: Mapping[str, bytes], settings: Settings) -> str:
    """The ConfigMaps of a rendering as one YAML stream (what ``kubectl apply -f -`` reads)."""
    parts = [files[p].decode("utf-8") for p in sorted(files) if settings.model_of(p)]
    return "---\n".join(parts)


def _embedded(text: str) -> Any:
    """The routing document inside a rendered ConfigMap's text, or None when it cannot be found."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  ") and line.rstrip().endswith(": |"):
            body = [raw[4:] for raw in lines[i + 1:] if raw.startswith("    ") or not raw.strip()]
            try:
                return json.loads("\n".join(body))
            except ValueError:
                return None
    return None


def _diffs(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value here, value rendered) for every leaf that differs; a null against an
    object is one difference, not one per field of the object."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(before) | set(after)):
            out += _diffs(before.get(key, _ABSENT), after.get(key, _ABSENT), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if before == after and type(before) is type(after) else [(prefix, before, after)]


def _short(value: Any) -> str:
    text = "absent" if value is _ABSENT else json.dumps(value, ensure_ascii=True, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def difference(have: bytes, want: bytes) -> tuple[int | None, str]:
    """Where a rendered file differs from its rendering: (first differing line, what differs), for `check`."""
    old, new = have.decode("utf-8", errors="replace"), want.decode("utf-8", errors="replace")
    old_lines, new_lines = old.splitlines(), new.splitlines()
    line = next((i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)) if a != b),
                min(len(old_lines), len(new_lines)) + 1)
    before, after = _embedded(old), _embedded(new)
    if isinstance(before, dict) and isinstance(after, dict) and before != after:
        found = _diffs(before, after)
        shown = "; ".join(f"{k} is {_short(a)} here, {_short(b)} in the registry" for k, a, b in found[:3])
        more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
        return line, f"routing document: {shown}{more}"
    def at(lines: list[str]) -> str:
        return _short(lines[line - 1]) if line <= len(lines) else "the end of the file"
    return line, f"line {line} is {at(old_lines)} here, {at(new_lines)} when rendered"
