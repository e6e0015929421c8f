"""Helpers for lifecycle tests that share one registry per module (built once, read many times)."""
from __future__ import annotations

import contextlib

import pytest
from conftest import pin_env


@contextlib.contextmanager
def isolated_env(tmp_path_factory):
    """The environment conftest pins per test, for module-scoped fixtures; yields the MonkeyPatch."""
    mp = pytest.MonkeyPatch()
    pin_env(mp, tmp_path_factory.mktemp("home"))
    try:
        yield mp
    finally:
        mp.undo()
