"""The only place that parses or writes YAML.

Reading is strict: a bundle or deployment file is untrusted input that decides what serves
traffic, so anything a reader could interpret two ways is refused instead of guessed: anchors,
aliases, merge keys, explicit tags, directives, several documents, duplicate keys, non-string
keys, files over 256 KiB. Plain scalars are resolved with the YAML 1.2 core schema by our own
code, from the parser's events (libyaml through PyYAML when available: it is ~25x faster than a
pure-Python parser, which matters for `status` over thousands of deployment files).

Writing goes through ruamel.yaml's round-trip mode so comments people add to deployment files
survive, and every string that a YAML 1.1 reader (PyYAML, Kubernetes tools) could take for
something else (``yes``, ``1.10``, ``2.4.0``, ``12:30``) is double-quoted.
"""
from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from .errors import ValidationError

if TYPE_CHECKING:
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import ScalarNode
    from ruamel.yaml.representer import BaseRepresenter
    from yaml.events import Event

MAX_BYTES = 256 * 1024
# Numbers beyond this are refused at load: nothing a registry counts comes near it, and a 310-digit
# integer would pass the schema only to overflow a float in shadow, watch or gate later.
MAX_NUMBER = 10**18
MAX_DEPTH = 32  # no registry file nests deeper; a deeper one is an attack on the reader

_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INT10 = re.compile(r"^[-+]?[0-9]+\Z")
_INT8 = re.compile(r"^0o[0-7]+\Z")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"^[-+]?\.(inf|Inf|INF)\Z")
_NAN = re.compile(r"^\.(nan|NaN|NAN)\Z")

# A string may be written plain only if no YAML 1.1 or 1.2 reader can take it for anything else.
_PLAIN_SAFE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@+-]*\Z")
_YAML11_WORDS = {
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
}


# Where a node sits in a document: the keys and list indexes from the root down to it.
Location: TypeAlias = tuple[str | int, ...]


@dataclass
class Document:
    """A strictly loaded YAML document: its data and the line of every node (1-based)."""

    data: Any
    path: str
    lines: dict[Location, int] = field(default_factory=dict)
    raw: dict[Location, str] = field(default_factory=dict)  # source text of non-string scalars

    def line_of(self, location: Location) -> int | None:
        """Line of the node at `location` (a tuple of keys/indexes), or of its nearest parent."""
        loc = tuple(location)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)


def _resolve_plain(value: str) -> Any:
    if value in _NULL:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if _INT10.match(value):
        return int(value)
    if _INT8.match(value):
        return int(value[2:], 8)
    if _INT16.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.match(value):
        return math.nan
    return value


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:20]}...({len(text)} characters)"


def _events(text: str) -> Iterator[Event]:
    import yaml  # PyYAML: used only as an event parser, never to construct objects

    loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    return yaml.parse(text, Loader=loader)


@dataclass(slots=True)
class _Open:
    """A mapping or list of the document being filled while its events stream in."""

    container: dict[str, Any] | list[Any]
    loc: Location
    key: str | None = None  # a mapping's key read but not yet given its value
    seen: set[str] = field(default_factory=set)  # a mapping's keys so far (duplicates are refused)


def loads(text: str | bytes, path: str = "<input>") -> Document:
    """Parse one YAML document strictly; raise ValidationError naming file and line."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise ValidationError(f"{path}: file is {len(text)} bytes; the limit is {MAX_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    elif len(text.encode("utf-8")) > MAX_BYTES:
        raise ValidationError(f"{path}: file is larger than {MAX_BYTES} bytes")
    if text.startswith("\ufeff"):
        text = text[1:]
    import yaml
    from yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        DocumentStartEvent,
        MappingStartEvent,
        ScalarEvent,
        SequenceStartEvent,
    )

    events = _events(text)
    lines: dict[Location, int] = {}
    raw: dict[Location, str] = {}

    def fail(event: Event, what: str) -> NoReturn:
        line = event.start_mark.line + 1 if event.start_mark else "?"
        raise ValidationError(f"{path}:{line}: {what}")

    documents = 0
    stack: list[_Open] = []
    root: Any = None

    def attach(value: Any, event: Event, is_container: bool) -> Location | None:
        """Put `value` in the open container; its location, or None when it is a mapping key."""
        nonlocal root
        mark = event.start_mark
        assert mark is not None  # the parser marks every event; the stubs allow None
        line = mark.line + 1
        if not stack:
            root = value
            lines[()] = line
            return ()
        top = stack[-1]
        container, loc = top.container, top.loc
        if isinstance(container, list):
            sub: Location = loc + (len(container),)
            container.append(value)
            lines[sub] = line
            return sub
        if top.key is None:
            if is_container:
                fail(event, "a mapping key must be a plain string, not a mapping or list")
            if type(value) is not str:
                fail(event, f"mapping key {value!r} must be a string; quote it")
            if value in top.seen:
                fail(event, f"duplicate key {value!r}")
            top.seen.add(value)
            top.key = value
            return None
        key = top.key
        top.key = None
        sub = loc + (key,)
        container[key] = value
        lines[sub] = line
        return sub

    def node(event: ScalarEvent | MappingStartEvent | SequenceStartEvent) -> None:
        if event.anchor is not None:
            fail(event, f"anchor &{event.anchor} is not allowed; write the value out")
        if event.tag not in (None, "!"):
            fail(event, f"explicit tag {event.tag} is not allowed")

    try:
        for event in events:
            # dispatch on the exact type, commonest first: a status of 2,000 models parses ~100,000 events
            kind = type(event)
            if kind is ScalarEvent:
                assert isinstance(event, ScalarEvent)  # for the type checker; `kind is` already said so
                node(event)
                plain = event.implicit[0] and event.style in (None, "")
                value: Any
                try:
                    value = _resolve_plain(event.value) if plain else event.value
                except ValueError:  # an integer past Python's digit limit
                    value = math.inf
                vt = type(value)
                if vt is float and not math.isfinite(value):
                    fail(event, f"{_short(event.value)} is not a usable number; write a finite value")
                if (vt is int or vt is float) and abs(value) > MAX_NUMBER:  # bool is neither
                    fail(event, f"{_short(event.value)} is too large a number (the limit is 1e18)")
                if plain and event.value == "<<" and stack and stack[-1].key is None and isinstance(stack[-1].container, dict):
                    fail(event, "merge keys (<<) are not allowed; write the keys out")
                sub = attach(value, event, False)
                if plain and sub is not None and vt is not str:
                    raw[sub] = event.value
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                assert isinstance(event, (MappingStartEvent, SequenceStartEvent))
                node(event)
                if len(stack) >= MAX_DEPTH:
                    fail(event, f"nesting deeper than {MAX_DEPTH} levels")
                container: dict[str, Any] | list[Any] = {} if kind is MappingStartEvent else []
                loc = attach(container, event, True)
                # a container is never a mapping key (attach refused it), so it has a location
                assert loc is not None
                stack.append(_Open(container, loc))
            elif isinstance(event, CollectionEndEvent):
                stack.pop()
            elif isinstance(event, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    fail(event, "several YAML documents in one file; keep one")
                if getattr(event, "version", None) or getattr(event, "tags", None):
                    fail(event, "%YAML/%TAG directives are not allowed")
            elif isinstance(event, AliasEvent):
                fail(event, f"alias *{event.anchor} is not allowed; write the value out")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f"{mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "nesting depth" in problem:
            # PyYAML >= 6.0.3 has its own (deeper) limit, hit while scanning ahead of our own check:
            # the same refusal either way, whichever PyYAML is installed
            raise ValidationError(f"{path}:{line} nesting deeper than {MAX_DEPTH} levels") from None
        if mark and _tab_indented(text, mark.line):
            problem = "a tab in the indentation; indent with spaces (YAML does not allow tabs there)"
        raise ValidationError(f"{path}:{line} invalid YAML: {problem}") from None
    if documents == 0:
        root = None
    return Document(root, path, lines, raw)


def _tab_indented(text: str, index: int) -> bool:
    lines = text.splitlines()
    if not 0 <= index < len(lines):
        return False
    row = lines[index]
    return "\t" in row[: len(row) - len(row.lstrip(" \t"))]


def load_file(path: str | os.PathLike[str], display: str | None = None) -> Document:
    """Strictly load a YAML file from disk (size checked before reading it whole)."""
    shown = display or str(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ValidationError(f"{shown}: no such file") from None
    except OSError as exc:
        raise ValidationError(f"{shown}: cannot read ({exc.strerror})") from None
    if size > MAX_BYTES:
        raise ValidationError(f"{shown}: file is {size} bytes; the limit is {MAX_BYTES}")
    with open(path, "rb") as fh:
        return loads(fh.read(), shown)


def _needs_quotes(text: str) -> bool:
    return not _PLAIN_SAFE.match(text) or text.lower() in _YAML11_WORDS or len(text) > 200


def _prepare(value: Any, existing: Any = None) -> Any:
    """Turn plain data into ruamel round-trip nodes, reusing `existing` to keep comments."""
    from ruamel.yaml.comments import Comment, CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    if isinstance(value, dict):
        target = CommentedMap()
        if isinstance(existing, CommentedMap):
            # comments and flow style live on the map, keyed by key: carry them over
            for attr in ("_yaml_comment", "_yaml_format"):
                if hasattr(existing, attr):
                    setattr(target, attr, getattr(existing, attr))
        for key, item in value.items():
            prev = existing.get(key) if isinstance(existing, dict) else None
            qkey = DoubleQuotedScalarString(key) if isinstance(key, str) and _needs_quotes(key) else key
            target[qkey] = _prepare(item, prev)
        return target
    if isinstance(value, (list, tuple)):
        seq = CommentedSeq()
        for i, item in enumerate(value):
            prev = existing[i] if isinstance(existing, list) and i < len(existing) else None
            seq.append(_prepare(item, prev))
        if isinstance(existing, CommentedSeq) and len(existing) == len(seq):
            # keep list comments (the attribute is ruamel's own: Comment.attrib, "_yaml_comment")
            setattr(seq, Comment.attrib, getattr(existing, Comment.attrib, None))
            if getattr(seq, Comment.attrib) is None:
                delattr(seq, Comment.attrib)
        return seq
    if isinstance(value, str):
        return DoubleQuotedScalarString(value) if _needs_quotes(value) else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"cannot write non-finite number {value!r}")
    return value


def _represent_float(rep: BaseRepresenter, value: float) -> ScalarNode:
    # YAML 1.1 readers need a dot in the mantissa and a signed exponent: 1e-05 -> 1.0e-05
    text = repr(value)
    if "e" in text:
        mantissa, _, exp = text.partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        text = f"{mantissa}e{exp}"
    return rep.represent_scalar("tag:yaml.org,2002:float", text)


def _yaml_rt() -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    yaml.representer.add_representer(float, _represent_float)
    return yaml


def dumps(data: Any, previous_text: str | None = None) -> str:
    """Serialise data as YAML; with `previous_text`, keep that file's comments and key order."""
    rt = _yaml_rt()
    existing = None
    if previous_text:
        # only to carry comments over: the text was already read strictly, and ruamel's
        # round-trip mode builds plain maps, lists and scalars, never arbitrary objects
        try:
            existing = rt.load(previous_text)
        except Exception:  # an unreadable previous file is simply replaced
            existing = None
    out = io.StringIO()
    rt.dump(_prepare(data, existing), out)
    return out.getvalue()
