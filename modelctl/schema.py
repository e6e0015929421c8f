"""JSON Schema validation with file:line:field in every message."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ValidationError
from .yamlio import Document, Location

if TYPE_CHECKING:
    from pathlib import Path

    from jsonschema import Draft202012Validator

# Bumped when validation changes beyond the schema files (ValidCache keys include it).
RULES_VERSION = b"config-rules-in-config-2"

KINDS = {
    "Registry": "registry.schema.json",
    "Bundle": "bundle.schema.json",
    "Deployment": "deployment.schema.json",
    "EvalReport": "eval-report.schema.json",
}


def data_path(*parts: str) -> Traversable:
    """A file shipped inside the package (schemas, registry template)."""
    return resources.files("modelctl").joinpath("data", *parts)


@cache
def _validator(kind: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = json.loads(data_path("schemas", KINDS[kind]).read_text("utf-8"))
    # Local $refs inlined once: reference resolution costs more than the checks themselves, and
    # `status` validates every deployment file of the registry.
    defs = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/") and len(node) == 1:
                return inline(defs[ref[len("#/$defs/"):]])
            return {k: (whole_string(v) if k == "pattern" and isinstance(v, str) else inline(v))
                    for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return Draft202012Validator(inline(schema))


def whole_string(pattern: str) -> str:
    """A schema pattern as Python must run it to match the whole string.

    JSON Schema patterns are ECMA-262, where `$` (no multiline flag) matches only at the very end;
    Python's `$` also matches before a final newline, so `id: "gpt-4o\\n"` passed `^...$`. Every
    pattern in schemas/*.json is anchored `^...$` (tests/test_hostile.py checks it); the end anchor
    becomes `\\Z`, which is what the schema means.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _field(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


Rule = Callable[[Document], "list[str]"]


def problems(doc: Document, kind: str, rules: Iterable[Rule] = ()) -> list[str]:
    """Every schema violation of `doc` as 'file:line: field: message', best first; then, once it
    matches the schema, what `rules` (checks JSON Schema cannot say, in the same form) find."""
    data = doc.data
    if not isinstance(data, dict):
        return [f"{doc.path}:1: expected a mapping of {kind} fields, found {type(data).__name__}"]
    validator = _validator(kind)
    from .secrets import redact_text, shown

    out = []
    if not validator.is_valid(data):
        for err in sorted(validator.iter_errors(data), key=lambda e: (list(e.path), e.message)):
            loc = tuple(err.path)
            line = doc.line_of(loc) or 1
            message = err.message
            if err.validator == "additionalProperties":
                message = message.replace("Additional properties are not allowed", "unknown field(s)")
            elif err.validator == "pattern" and isinstance(err.instance, str):
                message = f"{shown(err.instance)} {_PATTERN_HINTS.get(_last_key(loc), 'has the wrong form')}"
            elif err.validator == "type" and loc and loc[-1] in ("version", "parent", "active", "previous"):
                raw = doc.raw.get(loc, str(err.instance))
                message = f"{raw} is read as a {type(err.instance).__name__}; quote it: \"{raw}\""
            elif err.validator == "type" and isinstance(err.instance, (dict, list, str)):
                # jsonschema echoes the whole value: a mapping can be long, a string can be a key
                message = f"{shown(err.instance)} is not of type {err.validator_value!r}"
            # every message echoes the user's value somewhere: a pasted key is never printed whole
            message = redact_text(message)
            if len(message) > 300:
                message = message[:297] + "..."
            out.append(f"{doc.path}:{line}: {_field(loc)}: {message}")
    else:
        for rule in rules:
            out.extend(rule(doc))
    return out


def _last_key(loc: Location) -> str:
    return next((str(p) for p in reversed(loc) if not isinstance(p, int)), "")


_PATH_HINT = "must be a relative path inside the registry (no '..', no absolute path, no spaces or line breaks)"
_PATTERN_HINTS = {
    "template": _PATH_HINT,
    "report": _PATH_HINT,
    "id": "has the wrong form: a model id is letters, digits and . _ : / @ + - on one line",
    "provider": "has the wrong form: a provider is lowercase letters, digits and . _ - on one line",
    "token_env": "is not allowed: the variable's name must start with MODELCTL_METRICS_ (for example "
                 "MODELCTL_METRICS_TOKEN), so a change to modelctl.yaml cannot send another secret to the metrics url",
}




class PrivateFiles(Protocol):
    """Where a clone keeps modelctl's own files (store.Store; the pure core never imports the store)."""

    def private_path(self, name: str) -> Path:
        """A modelctl file in the git directory."""
        ...


def blob_id(raw: bytes) -> str:
    """The id git gives these bytes as a blob (sha1 repositories, the only kind modelctl opens)."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()  # noqa: S324 - git's blob id, not security


class ValidCache:
    """Blob ids already found valid against a schema, kept in the git directory.

    Content-addressed, so it can never be stale: a changed file is a different blob. It lets
    `status` skip re-validating thousands of unchanged deployment files on every call.
    """

    def __init__(self, store: PrivateFiles, kind: str, rules: Iterable[Rule] = ()) -> None:
        import hashlib

        # the rules version is part of the key: a blob valid under older rules is checked again
        digest = hashlib.sha256(data_path("schemas", KINDS[kind]).read_bytes() + RULES_VERSION).hexdigest()[:12]
        self.path = store.private_path(f"modelctl-valid-{kind.lower()}-{digest}")
        self.kind = kind
        self.rules = tuple(rules)
        try:
            self.known = set(self.path.read_text().split())
        except OSError:
            self.known = set()
        self.new: list[str] = []

    def validate(self, doc: Document, oid: str | None) -> dict[str, Any]:
        """validate(), skipped for a blob already known to be valid."""
        if oid and oid in self.known:
            # a known blob passed validate(), which accepts only a mapping
            known: dict[str, Any] = doc.data
            return known
        data = validate(doc, self.kind, self.rules)
        if oid:
            self.known.add(oid)
            self.new.append(oid)
        return data

    def problems(self, doc: Document, oid: str | None) -> list[str]:
        """problems(), none for a blob already known to be valid (a valid one is remembered)."""
        if oid and oid in self.known:
            return []
        found = problems(doc, self.kind, self.rules)
        if oid and not found:
            self.known.add(oid)
            self.new.append(oid)
        return found

    def save(self) -> None:
        """Append what was learnt (best effort: a read-only clone just stays slower)."""
        if not self.new:
            return
        try:
            with open(self.path, "a") as fh:
                fh.write("\n".join(self.new) + "\n")
        except OSError:
            pass
        self.new = []


def validate(doc: Document, kind: str, rules: Iterable[Rule] = ()) -> dict[str, Any]:
    """Return doc.data if it matches the schema of `kind` (and `rules`), else raise with the first problem."""
    found = problems(doc, kind, rules)
    if found:
        extra = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ValidationError(found[0] + extra)
    data: dict[str, Any] = doc.data  # problems() refuses anything but a mapping
    return data
