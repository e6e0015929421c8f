"""Allow-lists for everything user-supplied: names, versions, stages (checked before any I/O)."""
from __future__ import annotations

import re

from .errors import InvalidName

# \Z, not $: `$` also matches before a final newline, and these are used with .match elsewhere
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
# SemVer 2.0 core plus optional pre-release; no build metadata, no leading zeros.
_NUM = r"(0|[1-9][0-9]*)"
_PRE_ID = r"(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
VERSION_RE = re.compile(rf"^{_NUM}\.{_NUM}\.{_NUM}(-{_PRE_ID}(\.{_PRE_ID})*)?\Z")

STAGES = ("staging", "shadow", "canary", "active")
STATUSES = (
    "registered",
    "staging",
    "shadow",
    "canary",
    "active",
    "deprecated",
    "archived",
    "rolled-back",
)
PROMOTE_TARGETS = ("staging", "shadow", "canary", "active", "deprecated", "archived")


def _show(value: object) -> str:
    from .secrets import shown  # a pasted key is never echoed whole

    return shown(value)


def check_name(name: object) -> str:
    """Return the model name if it is a DNS label, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid model name {_show(name)}",
            hint="use lowercase letters, digits and '-' (a DNS label, at most 63 characters)",
        )
    return name


def check_version(version: object) -> str:
    """Return the version if it is SemVer MAJOR.MINOR.PATCH[-pre], else raise InvalidName."""
    if isinstance(version, str) and version.startswith("v") and VERSION_RE.fullmatch(version[1:]):
        raise InvalidName(
            f"invalid version {_show(version)}",
            hint=f"write versions without 'v' (for example {version[1:]})",
        )
    if not isinstance(version, str) or len(version) > 128 or not VERSION_RE.fullmatch(version):
        raise InvalidName(
            f"invalid version {_show(version)}",
            hint="use SemVer MAJOR.MINOR.PATCH with an optional pre-release, e.g. 2.4.0 or 2.4.0-rc.1",
        )
    return version


def check_stage(stage: object, allowed: tuple[str, ...] = PROMOTE_TARGETS) -> str:
    """Return the stage if it is one of the allowed names, else raise InvalidName."""
    if not isinstance(stage, str) or stage not in allowed:
        raise InvalidName(f"invalid stage {_show(stage)}", hint="use one of " + ", ".join(allowed))
    return stage


def parse_ref(text: str) -> tuple[str, str | None]:
    """Split NAME or NAME@VERSION (a leading 'v' on the version is accepted here)."""
    if "@" in text:
        name, _, version = text.partition("@")
        if version.startswith("v") and VERSION_RE.fullmatch(version[1:]):
            version = version[1:]
        return check_name(name), check_version(version)
    return check_name(text), None


# (major, minor, patch, 1 for a release / 0 for a pre-release, the pre-release identifiers)
SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def semver_key(version: str) -> SemverKey:
    """Sort key implementing SemVer 2.0 precedence."""
    core, _, pre = version.partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    if not pre:
        return (major, minor, patch, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, ids)


def clean_text(text: str | None, limit: int = 500) -> str:
    """User text for a trailer or tag message: one line, no control, bidi or invisible characters."""
    import unicodedata

    if not text:
        return ""
    # format characters (bidi overrides, zero-width spaces) vanish: they can hide or reorder text
    # and split a secret so the scanner misses it; other non-printables become spaces
    text = "".join("" if unicodedata.category(ch) == "Cf" else (ch if ch.isprintable() else " ")
                   for ch in str(text))
    text = " ".join(text.split())
    return text[:limit]
