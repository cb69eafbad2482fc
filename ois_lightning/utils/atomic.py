"""Atomic file writes: nothing already computed is lost or half-written when a run is interrupted."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def current_umask() -> int:
    """The process umask, read without changing it (``Umask:`` of /proc/self/status on Linux); elsewhere
    os.umask is set and restored, which other threads could observe for that moment."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[Any]], Any], mode: str = "w") -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, then ``os.replace`` it into place (same folder, so
    the rename is atomic); on any error the temp file is removed and ``path`` is untouched. The file gets the
    mode a plain ``open`` would give (0o666 less the umask), not mkstemp's 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Journal:
    """An append-only JSON-lines record of finished work, so an interrupted job resumes where it stopped.

    The first line holds ``fingerprint`` (what the work depends on); a file with another fingerprint is from
    other work and is started afresh. Each :meth:`add` appends one line and fsyncs it; a line torn by a crash
    is dropped (and the file rewritten without it) when the journal is opened again. ``records`` maps the
    ``key`` field of every record read back or added."""

    def __init__(self, path: str | Path, fingerprint: str, key: str) -> None:
        self.path, self.key = Path(path), key
        self.records: dict[str, dict] = {}
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        valid = []
        for line in lines:
            try:
                valid.append(json.loads(line))
            except ValueError:
                break  # a torn last line: everything after it is unusable
        if valid and valid[0].get("fingerprint") == fingerprint:
            self.records = {r[key]: r for r in valid[1:] if key in r}
        header = {"fingerprint": fingerprint}
        rows = [header, *self.records.values()]
        atomic_write(self.path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))

    def add(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record[self.key]] = record

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
