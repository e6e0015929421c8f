"""modelctl: a git-backed model registry for LLM/ML systems."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Registry", "__version__"]


def __getattr__(name: str):
    # lazy: `import modelctl` for the CLI must not pull in git plumbing
    if name == "Registry":
        from .registry import Registry

        return Registry
    raise AttributeError(name)
