"""Tag grammar shared with GTO (iterative/gto) and the per-model tag index.

- registration: ``<name>@v<version>`` on the commit that added the bundle;
- assignment:   ``<name>#<stage>#<N>``, unassignment ``<name>#<stage>!#<N>``, both on the
  version's registration commit (GTO finds the version through it);
- deregistration ``<name>@v<version>!`` (GTO's ``gto deprecate NAME VERSION``) on the same
  commit, when a version is archived (final).

``N`` is one more than the highest counter among the model's tags, and tagger times of one
model's tags strictly increase, because GTO orders events by tagger time at one-second resolution.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

from .names import NAME_RE, VERSION_RE

STAGE_TAG_RE = re.compile(r"^(?P<name>[a-z0-9-]+)#(?P<stage>[a-z-]+)(?P<un>!?)#(?P<n>[0-9]+)$")
REG_TAG_RE = re.compile(r"^(?P<name>[a-z0-9-]+)@v(?P<version>[0-9A-Za-z.-]+)(?P<un>!?)$")


@dataclass(frozen=True)
class TagRef:
    """One tag as listed by git: name, tag object, target commit, tagger time and identity."""

    name: str
    object: str
    commit: str
    time: int
    tagger: str = ""
    subject: str = ""


@dataclass(frozen=True)
class TagEvent:
    """A tag to create: a registration, or a stage assignment/unassignment of a version."""

    model: str
    version: str
    stage: str | None = None  # None: registration
    assign: bool = True
    message: str = ""


class TagInfo(TypedDict):
    """A tag name's parts: `version` for (de)registrations; `stage`, `assign`, `n` for stage tags."""

    kind: Literal["registration", "deregistration", "stage"]
    model: str
    version: NotRequired[str]
    stage: NotRequired[str]
    assign: NotRequired[bool]
    n: NotRequired[int]


def registration_tag(name: str, version: str) -> str:
    """The GTO registration tag of a version."""
    return f"{name}@v{version}"


def deregistration_tag(name: str, version: str) -> str:
    """The GTO deregistration tag of an archived version."""
    return f"{name}@v{version}!"


def stage_tag(name: str, stage: str, n: int, assign: bool = True) -> str:
    """The GTO stage tag: assignment or unassignment, with counter n."""
    return f"{name}#{stage}{'' if assign else '!'}#{n}"


def parse(tag: str) -> TagInfo | None:
    """Parse a modelctl/GTO tag name into its parts, or None when it is not one."""
    m = REG_TAG_RE.match(tag)
    if m and NAME_RE.fullmatch(m["name"]) and VERSION_RE.fullmatch(m["version"]):
        return {"kind": "deregistration" if m["un"] else "registration", "model": m["name"], "version": m["version"]}
    m = STAGE_TAG_RE.match(tag)
    if m and NAME_RE.fullmatch(m["name"]):
        return {
            "kind": "stage",
            "model": m["name"],
            "stage": m["stage"],
            "assign": not m["un"],
            "n": int(m["n"]),
        }
    return None


def next_counter(existing: list[TagRef]) -> int:
    """One more than the highest stage counter among a model's tags."""
    highest = 0
    for ref in existing:
        info = parse(ref.name)
        if info and info["kind"] == "stage":
            highest = max(highest, info["n"])
    return highest + 1


def last_time(existing: list[TagRef]) -> int:
    """Latest tagger time among a model's tags (0 when none)."""
    return max((ref.time for ref in existing), default=0)
