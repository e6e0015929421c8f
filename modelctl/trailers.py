"""Commit and tag trailers (DESIGN §3): the one table of keys modelctl writes, the order they are
written in, how a message is formatted and how trailers are parsed back. Pure: no git, no I/O.

Every writer (state's transitions, register, the gate, watch's evidence, doctor's repairs, tag
messages) and every reader (log and which, check's lifecycle judge, the pull-request body, doctor,
watch's view of recent decisions) goes through here.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable

PREFIX = "Modelctl-"

ACTION = "Modelctl-Action"
MODEL = "Modelctl-Model"
VERSION = "Modelctl-Version"
FROM = "Modelctl-From"
TO = "Modelctl-To"
PERCENT = "Modelctl-Percent"
FROM_PERCENT = "Modelctl-From-Percent"
REPLACES = "Modelctl-Replaces"
RESTORED = "Modelctl-Restored"
WAIVED = "Modelctl-Waived"
SKIPPED = "Modelctl-Skipped"
FORCE = "Modelctl-Force"
OVERRIDE = "Modelctl-Override"
REASON = "Modelctl-Reason"
EVIDENCE = "Modelctl-Evidence"
GATE = "Modelctl-Gate"
GATE_OVERRIDE = "Modelctl-Gate-Override"
COMPAT = "Modelctl-Compat"  # register: "fits", or the mismatches with platform: at registration
COMPAT_OVERRIDE = "Modelctl-Compat-Override"  # canary/promote --force past a compatibility mismatch
SHADOW_COST = "Modelctl-Shadow-Cost"
BUDGET = "Modelctl-Budget"
PARENT = "Modelctl-Parent"
CHANGE = "Modelctl-Change"
SEMVER = "Modelctl-Semver"
MULTI_CHANGE = "Modelctl-Multi-Change"
ARCHIVED = "Modelctl-Archived"  # gc: "NAME RUNS", one per model, the versions it archived
SEGMENT = "Modelctl-Segment"  # the caller segment a canary serves (README "Routes and segments")
# tag messages and doctor's repairs
EVENT = "Modelctl-Event"
STAGE = "Modelctl-Stage"
REPAIR = "Modelctl-Repair"
COMMIT = "Modelctl-Commit"
# routes (issue 15): the route a lifecycle event applies to; absent = the whole model
ROUTE = "Modelctl-Route"

# A lifecycle commit's trailers after Action, Model and Version, in this order, keyed by the
# transition field that fills them (state.Transition and its extras).
TRANSITION_ORDER: tuple[tuple[str, str], ...] = (
    ("from_status", FROM),
    ("to_status", TO),
    ("percent", PERCENT),
    ("from_percent", FROM_PERCENT),
    ("segment", SEGMENT),
    ("replaces", REPLACES),
    ("restored", RESTORED),
    ("waived", WAIVED),
    ("skipped", SKIPPED),
    ("force", FORCE),
    ("override", OVERRIDE),
    ("reason", REASON),
    ("evidence", EVIDENCE),
)

# What `log` and `which` report of a commit's trailers, as event fields.
EVENT_FIELDS: dict[str, str] = {
    ACTION: "action",
    VERSION: "version",
    FROM: "from",
    TO: "to",
    PERCENT: "percent",
    FROM_PERCENT: "from_percent",
    REPLACES: "replaces",
    RESTORED: "restored",
    REASON: "reason",
    EVIDENCE: "evidence",
    FORCE: "force",
    SKIPPED: "skipped",
    WAIVED: "waived",
    OVERRIDE: "override",
    SHADOW_COST: "shadow_cost",
    GATE: "gate",
}

Pairs = list[tuple[str, str]]

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*):\s?(.*)$")


def transition(action: str, name: str, version: str, number: Callable[[float], str] = str,
               **values: object) -> Pairs:
    """A lifecycle commit's trailers: Action, Model, Version, then TRANSITION_ORDER.

    None, False and empty lists are left out; lists are comma-joined, True is "true", numbers go
    through `number` (state passes its percent format). An unknown field is a programming error.
    """
    out: Pairs = [(ACTION, action), (MODEL, name), (VERSION, version)]
    for field, key in TRANSITION_ORDER:
        value = values.pop(field, None)
        if value is None or value == [] or value is False:
            continue
        if isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        elif value is True:
            text = "true"
        elif isinstance(value, (int, float)):
            text = number(value)
        else:
            text = str(value)
        out.append((key, text))
    if values:
        raise TypeError(f"unknown trailer fields: {sorted(values)}")
    return out


def block(pairs: Iterable[tuple[str, str]]) -> str:
    """Trailers as the lines of a message's last paragraph."""
    return "\n".join(f"{key}: {value}" for key, value in pairs)


def message(subject: str, body: str = "", pairs: Iterable[tuple[str, str]] = ()) -> str:
    """A commit or tag message: subject, optional body, trailers (each part a paragraph)."""
    parts = [subject]
    if body and body.strip():
        parts.append(body.strip())
    text = block(pairs)
    if text:
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def parse_pairs(text: str) -> Pairs:
    """Every `Key: value` line of a trailer block (git's `%(trailers:only,unfold)`), in order."""
    out: Pairs = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out


def parse(text: str) -> dict[str, str]:
    """modelctl's trailers of a block, the first value of each key."""
    out: dict[str, str] = {}
    for key, value in parse_pairs(text):
        if key.startswith(PREFIX):
            out.setdefault(key, value)
    return out


def first(pairs: Iterable[tuple[str, str]], key: str) -> str | None:
    """The first value of `key` among pairs, or None."""
    return next((v for k, v in pairs if k == key), None)


def only(pairs: Iterable[tuple[str, str]], keys: Iterable[str]) -> dict[str, str]:
    """The first value of each of `keys` present among pairs."""
    wanted = set(keys)
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in wanted:
            out.setdefault(key, value)
    return out

