"""A minimal `git fast-import` stream writer for building large benchmark registries in one process."""
from __future__ import annotations

import subprocess
from pathlib import Path

IDENT = b"Bench <bench@example.com>"


class FastImport:
    """Blobs, commits on main and annotated tags, written as one fast-import stream."""

    def __init__(self, parent: str):
        self.out = bytearray()
        self.mark = 0
        self.parent: str | None = parent  # the first commit continues the registry's history

    def _next(self) -> int:
        self.mark += 1
        return self.mark

    @staticmethod
    def _data(raw: bytes) -> bytes:
        return b"data %d\n%s\n" % (len(raw), raw)

    def blob(self, data: bytes) -> int:
        mark = self._next()
        self.out.extend(b"blob\nmark :%d\n" % mark + self._data(data))
        return mark

    def commit(self, message: str, files: list[tuple[str, int]], when: int) -> int:
        mark = self._next()
        self.out.extend(b"commit refs/heads/main\nmark :%d\ncommitter %s %d +0000\n" % (mark, IDENT, when))
        self.out.extend(self._data(message.encode()))
        if self.parent:
            self.out.extend(f"from {self.parent}\n".encode())
            self.parent = None
        for path, blob in files:
            self.out.extend(f"M 100644 :{blob} {path}\n".encode())
        self.out.extend(b"\n")
        return mark

    def tag(self, name: str, commit: int, message: str, when: int) -> None:
        self.out.extend(f"tag {name}\nfrom :{commit}\n".encode())
        self.out.extend(b"tagger %s %d +0000\n" % (IDENT, when) + self._data(message.encode()))

    def run(self, repo: Path) -> None:
        """Import the stream, pack the refs and bring the work tree to the new tip."""
        subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=bytes(self.out), check=True)
        subprocess.run(["git", "pack-refs", "--all"], cwd=repo, check=True)
        subprocess.run(["git", "read-tree", "-u", "--reset", "HEAD"], cwd=repo, check=True)


def head(repo: Path) -> str:
    """The commit the registry is at now."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
