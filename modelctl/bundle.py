"""Bundles: validation rules, prompt hashing, change classification against the parent, semver.

Pure: callers hand in bytes and data; nothing here touches git or the filesystem.
"""
from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from . import schema, yamlio
from .errors import ValidationError
from .names import check_name, check_version, semver_key
from .secrets import shown

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from .config import PinningConfig
    from .documents import BundleDiff, FieldChange

Level = Literal["patch", "minor", "major"]
LEVELS: tuple[Level, ...] = ("patch", "minor", "major")
MAX_PROMPT_BYTES = 10 * 1024 * 1024  # every prompt read, new or already committed
# Snapshot suffixes that pin a model id within its family (dates, numeric revisions).
_SNAPSHOT_SUFFIX = re.compile(r"([-@:](\d{4}-\d{2}-\d{2}|\d{8}|\d{3,4}|v\d+|\d{4}-\d{2})|-preview)$")
_PATH_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\Z")  # \Z: `$` would let "x.txt\n" through
_DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def bundle_path(name: str, version: str) -> str:
    """Where a registered bundle lives."""
    return f"bundles/{check_name(name)}/{check_version(version)}.yaml"


def check_repo_path(path: str, field_name: str, source: str) -> str:
    """A path inside the registry: relative, no '..', no odd characters."""
    parts = path.split("/")
    if (not _PATH_OK.match(path) or path.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or path.startswith(".git/") or ".git" in parts):
        raise ValidationError(f"{source}: {field_name}: {shown(path)} must be a relative path inside the registry "
                              "(no '..', no absolute path)")
    return path


def parse(text: bytes | str, source: str) -> yamlio.Document:
    """Strictly parse and schema-validate a bundle file; names checked before anything else."""
    doc = yamlio.loads(text, source)
    data = doc.data
    if isinstance(data, dict):
        # names first: a hostile name must never reach git or the filesystem
        for key, check in (("name", check_name), ("version", check_version)):
            if key in data and isinstance(data[key], str):
                try:
                    check(data[key])
                except ValidationError:
                    raise
                except Exception as exc:
                    raise ValidationError(f"{source}:{doc.line_of((key,))}: {key}: {exc}") from None
    schema.validate(doc, "Bundle")
    return doc


# The model line is the id's leading word: gpt, o (OpenAI's o1/o3/o4 reasoning line), claude, gemini,
# llama, mistral, mixtral, codestral, qwen, deepseek, command. Sizes, tiers and versions (mini, sonnet,
# 70b, 4.1, 3-5) follow it and do not change the line. Hosting prefixes are dropped first:
# "meta-llama/Llama-3.1-8B" (Hugging Face, OpenRouter), "us.anthropic.claude-..." (Bedrock),
# "open-mistral-7b" (Mistral's open-weight ids), "Meta-Llama-3-8B", "ft:gpt-4o-mini-...:org::id" (OpenAI
# fine-tunes belong to their base model's line).
_HOST_PREFIX = re.compile(r"^(?:[a-z0-9-]+\.)+(?=[a-z])")  # bedrock: vendor. and region. before the name
_OWNER_PREFIX = re.compile(r"^(?:ft:|open-|meta-)(?=[a-z])")
_LINE = re.compile(r"[a-z]+")
# Lines that share a leading word with another line of the same vendor but are different models.
_REASONING = {"deepseek": re.compile(r"(^|[-_])(reasoner|r1)([-_:]|$)")}


def derived_family(ident: str) -> str:
    """The model line of a provider model id: 'gpt-4.1-mini-2025-04-14' -> 'gpt', 'o3' -> 'o'."""
    name = ident.strip().lower().rsplit("/", 1)[-1]
    name = _OWNER_PREFIX.sub("", _HOST_PREFIX.sub("", name))
    line = _LINE.match(name)
    if not line:  # no leading word: the id without its snapshot suffix, as before
        previous = None
        while previous != name:
            previous, name = name, _SNAPSHOT_SUFFIX.sub("", name)
        return name
    family = line.group(0)
    reasoning = _REASONING.get(family)
    if reasoning and reasoning.search(name[len(family):]):
        family += "-reasoner"
    return family


def check_prompt_digest(doc: yamlio.Document, source: str) -> None:
    """A `prompt.sha256` the user wrote must be a whole digest; a placeholder such as `9f2c...` is refused."""
    prompt = doc.data.get("prompt") if isinstance(doc.data, dict) else None
    given = prompt.get("sha256") if isinstance(prompt, dict) else None
    if given is not None and not (isinstance(given, str) and _DIGEST.fullmatch(given)):
        raise ValidationError(f"{source}:{doc.line_of(('prompt', 'sha256')) or 1}: prompt.sha256 is filled in by "
                              "register: remove it or give the full hex digest")


def family(model: Mapping[str, Any]) -> str:
    """The model family: explicit `model.family`, else the model line derived from the id."""
    if model.get("family"):
        return str(model["family"])
    return derived_family(str(model["id"]))


def check_pinned(model: Mapping[str, Any], pinning: PinningConfig, source: str, line: int | None = None) -> None:
    """Refuse floating aliases; apply per-provider snapshot patterns."""
    ident = str(model["id"])
    where = f"{source}:{line or 1}: model.id"
    for pattern in pinning.forbid:
        if fnmatch.fnmatchcase(ident.lower(), pattern.lower()):
            raise ValidationError(f"{where}: {shown(ident)} is an alias (matches {pattern!r}), not a pinned model",
                                  hint="use a dated snapshot id such as gpt-4.1-mini-2025-04-14")
    rule = pinning.providers.get(model["provider"])
    if rule and not re.fullmatch(rule, ident):
        raise ValidationError(f"{where}: {shown(ident)} is not a pinned {model['provider']} snapshot "
                              f"(modelctl.yaml pinning.providers.{model['provider']}: {rule})")


@dataclass
class Change:
    """What differs between a bundle and its parent, and the semver bump that requires."""

    kinds: list[str] = field(default_factory=list)  # among model, prompt, config
    detail: list[str] = field(default_factory=list)
    level: Level | None = None  # None: nothing that matters changed


def classify(parent: Mapping[str, Any], child: Mapping[str, Any]) -> Change:
    """Classify child's change against parent: model (major/minor), prompt, config (patch)."""
    ch = Change()
    pm, cm = parent["model"], child["model"]
    levels: list[Level] = []
    if pm["provider"] != cm["provider"]:
        ch.kinds.append("model")
        ch.detail.append(f"provider {pm['provider']} -> {cm['provider']}")
        levels.append("major")
    elif family(pm) != family(cm):
        ch.kinds.append("model")
        ch.detail.append(f"model family {family(pm)} -> {family(cm)}")
        levels.append("major")
    elif pm["id"] != cm["id"] or pm.get("adapter") != cm.get("adapter"):
        ch.kinds.append("model")
        if pm["id"] != cm["id"]:
            ch.detail.append(f"model id {pm['id']} -> {cm['id']}")
        if pm.get("adapter") != cm.get("adapter"):
            ch.detail.append(f"adapter {pm.get('adapter')} -> {cm.get('adapter')}")
        levels.append("minor")
    if parent["prompt"].get("sha256") != child["prompt"].get("sha256") or \
            parent["prompt"]["template"] != child["prompt"]["template"]:
        ch.kinds.append("prompt")
        ch.detail.append(f"prompt {parent['prompt']['template']} -> {child['prompt']['template']}")
        levels.append("patch")
    if (parent.get("config") or {}) != (child.get("config") or {}):
        ch.kinds.append("config")
        keys = sorted(set(parent.get("config") or {}) | set(child.get("config") or {}))
        changed = [k for k in keys if (parent.get("config") or {}).get(k) != (child.get("config") or {}).get(k)]
        ch.detail.append("config " + ", ".join(changed))
        levels.append("patch")
    if levels:
        ch.level = max(levels, key=LEVELS.index)
    return ch


def bump(version: str, level: str) -> str:
    """The next version at a level (pre-release dropped)."""
    core = version.split("-")[0]
    major, minor, patch = (int(p) for p in core.split("."))
    if level == "major":
        return f"{major + 1}.0.0"
    if level == "minor":
        return f"{major}.{minor + 1}.0"
    if "-" in version:  # 2.4.0-rc.1 -> 2.4.0 is the patch-level successor
        return core
    return f"{major}.{minor}.{patch + 1}"


def bump_level(parent: str, child: str) -> str | None:
    """Which part of the version went up from parent to child (None if it did not increase)."""
    if semver_key(child) <= semver_key(parent):
        return None
    p = [int(x) for x in parent.split("-")[0].split(".")]
    c = [int(x) for x in child.split("-")[0].split(".")]
    if c[0] > p[0]:
        return "major"
    if c[0] == p[0] and c[1] > p[1]:
        return "minor"
    return "patch"


def check_semver(parent: str, child: str, required: str | None, source: str, why: str = "") -> None:
    """The child's version must rise at least at the level the change requires (`why`: the change)."""
    got = bump_level(parent, child)
    if got is None:
        raise ValidationError(f"{source}: version {child} must be greater than its parent {parent}")
    if required and LEVELS.index(got) < LEVELS.index(required):
        raise ValidationError(
            f"{source}: version {child} is a {got} bump of {parent}, but the change"
            f"{f' ({why})' if why else ''} needs a {required} bump",
            hint=f"use version {bump(parent, required)} or --bump {required}")


# What a lookup of a path in the registry says: ("file", bytes), ("symlink", None) or ("missing", None).
Lookup = Callable[[str], "tuple[str, bytes | None]"]


def stored_problems(doc: yamlio.Document, path: str, lookup: Lookup, *, validated: bool = False) -> list[str]:
    """Everything wrong with a bundle as stored at `path` (bundles/NAME/VERSION.yaml), as
    'path:line: message' (or 'path: message'): its schema, its place, the prompt it pins (there, a
    regular file, at most 10 MiB, the hash it records) and its eval report (there). `validated`:
    the caller has already checked the schema.

    The one list of these rules: `check` reports them all; doctor --fix (`ops.registration_problem`)
    refuses a hand-merged bundle on the first.
    """
    def at(loc: tuple[str, ...], message: str) -> str:
        line = doc.line_of(loc)
        return f"{path}:{line}: {message}" if line else f"{path}: {message}"

    found = [] if validated else schema.problems(doc, "Bundle")
    if found:
        return found
    data = doc.data
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "bundles" or not parts[2].endswith(".yaml"):
        return [f"{path}: bundles live at bundles/<name>/<version>.yaml"]
    if data["name"] != parts[1] or data["version"] != parts[2][:-len(".yaml")]:
        found.append(at(("name",), f"file says {data['name']} {data['version']} but lives at {path}"))
    rel = data["prompt"]["template"]
    try:
        check_repo_path(rel, "prompt.template", path)
        kind, content = lookup(rel)
    except ValidationError as exc:
        found.append(exc.message)
        kind, content = "invalid", None
    if kind == "missing":
        found.append(at(("prompt", "template"), f"prompt.template: {rel} does not exist in the registry"))
    elif kind == "symlink":
        found.append(at(("prompt", "template"), f"prompt.template: {rel} is a symlink in the registry"))
    elif content is not None:
        if len(content) > MAX_PROMPT_BYTES:
            found.append(at(("prompt", "template"), f"prompt {rel} is larger than 10 MiB (the limit for every prompt)"))
        elif sha256(content) != data["prompt"].get("sha256"):
            found.append(at(("prompt", "sha256"), f"prompt {rel} changed since registration (sha256 mismatch)"))
    report = (data.get("eval") or {}).get("report")
    if report:
        try:
            check_repo_path(report, "eval.report", path)
            missing = lookup(report)[0] == "missing"
        except ValidationError as exc:
            found.append(exc.message)
            missing = False
        if missing:
            found.append(at(("eval", "report"), f"eval.report: {report} does not exist in the registry"))
    return found


def bundle_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> BundleDiff:
    """Which of model, prompt, config, data, eval, baseline, fallbacks changed, field by field."""
    sections: dict[str, list[FieldChange]] = {}
    for section in ("model", "prompt", "config", "data", "eval", "baseline", "fallbacks"):
        rows: list[FieldChange] = []
        _walk_diff(a.get(section), b.get(section), section, rows)
        sections[section] = rows
    changed = [s for s, rows in sections.items() if rows]
    change = classify(a, b) if a.get("model") and b.get("model") else None
    return {"changed": changed, "fields": sections, "semver": change.level if change else None}


def _walk_diff(x: Any, y: Any, path: str, out: list[FieldChange]) -> None:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in list(x) + [k for k in y if k not in x]:
            _walk_diff(x.get(key), y.get(key), f"{path}.{key}", out)
    elif x != y:
        out.append({"field": path, "from": x, "to": y})
