"""Report outputs written as one consistent set: write aside, then swap.

The files a comparison writes (``report.html``, ``figures/``, ``results.json``
and the CSV files) must never be a mix of two runs, even when a run is killed
while writing them. They are laid out as::

    <out>/report.html   -> .outputs/current/report.html    symbolic links, made once
    <out>/figures       -> .outputs/current/figures
    …
    <out>/.outputs/current -> <generation>                 one link, swapped
    <out>/.outputs/<generation>/report.html, figures/, …    the files

A new set is written complete into a new generation folder; then the
``current`` link is replaced by one pointing at it with a single
``rename(2)``, which is atomic, and the older generations are removed. A
reader, or a kill at any moment, sees the old set or the new set. (The first
time a folder written by an older descentlab is used, its plain files are
replaced by the links one by one.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from types import TracebackType

__all__ = ["OUTPUTS", "OutputSet"]

OUTPUTS = ".outputs"
CURRENT = "current"


class OutputSet:
    """A new generation of outputs in ``out``: write into :attr:`folder`, then publish.

    As a context manager it publishes on success and discards the new files on
    an exception (the old set stays).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.root = self.out / OUTPUTS
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.folder = self.root / self.name
        self.folder.mkdir()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.publish()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)

    def final_path(self, staged: Path) -> Path:
        """Where a file written under :attr:`folder` is seen once published."""
        return self.out / Path(staged).relative_to(self.folder)

    def publish(self) -> None:
        """Make this generation the current one (atomic), then tidy up."""
        tmp = self.root / f".{CURRENT}-{self.name}"
        os.symlink(self.name, tmp)
        os.replace(tmp, self.root / CURRENT)
        for entry in sorted(self.folder.iterdir()):
            self._link(entry.name)
        self._tidy()

    def _link(self, name: str) -> None:
        target = os.path.join(OUTPUTS, CURRENT, name)
        dest = self.out / name
        if dest.is_symlink() and os.readlink(dest) == target:
            return
        if dest.is_dir() and not dest.is_symlink():  # a plain folder of an older layout
            shutil.rmtree(dest)
        tmp = self.out / f".{name}-{self.name}.link"
        os.symlink(target, tmp)
        os.replace(tmp, dest)

    def _tidy(self) -> None:
        """Remove older generations, left-over temporary links and links to names gone."""
        for entry in self.root.iterdir():
            if entry.name not in (CURRENT, self.name):
                if entry.is_symlink() or entry.is_file():
                    entry.unlink(missing_ok=True)
                else:
                    shutil.rmtree(entry, ignore_errors=True)
        prefix = os.path.join(OUTPUTS, CURRENT, "")
        for entry in self.out.iterdir():
            if not entry.is_symlink():
                continue
            if entry.name.endswith(".link") or (
                os.readlink(entry).startswith(prefix) and not entry.exists()
            ):
                with contextlib.suppress(OSError):
                    entry.unlink()
