"""Helpers for lifecycle tests that share one registry per module (built once, read many times)."""
from __future__ import annotations

import contextlib

import pytest

from conftest import git

IDENTITY = {"GIT_AUTHOR_NAME": "Ada Tester", "GIT_AUTHOR_EMAIL": "ada@example.com",
            "GIT_COMMITTER_NAME": "Ada Tester", "GIT_COMMITTER_EMAIL": "ada@example.com"}


@contextlib.contextmanager
def isolated_env(tmp_path_factory):
    """The environment conftest pins per test, for module-scoped fixtures; yields the MonkeyPatch."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    mp.setenv("HOME", str(home))
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    mp.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for key, value in IDENTITY.items():
        mp.setenv(key, value)
    for key in ("MODELCTL_REGISTRY", "MODELCTL_FAULT", "GIT_DIR", "GIT_INDEX_FILE", "GIT_AUTHOR_DATE",
                "GIT_COMMITTER_DATE"):
        mp.delenv(key, raising=False)
    try:
        yield mp
    finally:
        mp.undo()


def new_registry(path):
    """`modelctl init` plus the two prompt files the conftest bundles use, committed."""
    from modelctl import ops

    ops.init(path)
    (path / "prompts" / "p1.txt").write_text("You are helpful.\n")
    (path / "prompts" / "p2.txt").write_text("You are very helpful.\n")
    git(path, "add", "prompts")
    git(path, "commit", "-q", "-m", "prompts")
    return path
