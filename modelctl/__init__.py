"""modelctl: a git-backed model registry for LLM/ML systems."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `import modelctl` for the CLI must not pull in git plumbing
    from .registry import Registry

__version__ = "0.1.0"
__all__ = ["Registry", "__version__"]


def __getattr__(name: str) -> type[Registry]:
    # lazy: `import modelctl` for the CLI must not pull in git plumbing
    if name == "Registry":
        from .registry import Registry

        return Registry
    raise AttributeError(name)
