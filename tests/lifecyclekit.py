"""Helpers for lifecycle tests that share one registry per module (built once, read many times)."""
from __future__ import annotations

import contextlib

import pytest
from conftest import new_registry, pin_env, register_chain

import modelctl


@contextlib.contextmanager
def isolated_env(tmp_path_factory):
    """The environment conftest pins per test, for module-scoped fixtures; yields the MonkeyPatch."""
    mp = pytest.MonkeyPatch()
    pin_env(mp, tmp_path_factory.mktemp("home"))
    try:
        yield mp
    finally:
        mp.undo()


def live_registry(tmp_path_factory, name: str = "support-agent") -> modelctl.Registry:
    """A registry (built once per module) where 1.0.0 is active, 1.0.1 in canary at 10 % and 1.0.2
    shadowed at 25 %."""
    base = tmp_path_factory.mktemp("live")
    with isolated_env(tmp_path_factory):
        reg = modelctl.Registry(new_registry(base / "reg"))
        register_chain(reg, base, count=3)
        reg.promote(name, "1.0.0", "staging")
        reg.promote(name, "1.0.0", "active")
        for v in ("1.0.1", "1.0.2"):
            reg.promote(name, v, "staging")
        reg.shadow(name, "1.0.1", 25)
        reg.canary(name, "1.0.1", 10)
        reg.shadow(name, "1.0.2", 25)
    return reg
