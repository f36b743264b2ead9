"""Small C libraries built by gcc in the background, cached atomically, called through ctypes.

A :class:`NativeLibrary` is one C source (a rule's fused passes, e.g.
:mod:`descentlab.rules.adafactor_kernel`), or one C++ source built against
torch's headers (:class:`BuildSettings`; the flat engines' per-step check,
:mod:`descentlab.engine.slot_check`), that is compiled on first use, off
the critical path:

* :meth:`NativeLibrary.get` never waits for a build: at its first call a
  library already in the cache is loaded at once (a few milliseconds, so a
  process on a machine that built it before takes the library's path from
  its first step, and its results do not depend on a thread's timing);
  otherwise it starts the build in a daemon thread (once per process) and
  returns None, so the caller takes its eager torch path for that step and
  the next ones until the library is there;
* the shared object is cached under ``$DESCENTLAB_CACHE_DIR/native`` (default
  ``~/.cache/descentlab/native``), named by a hash of the source, the
  compiler flags, the compiler's version and the CPU's feature flags (the
  library is built with ``-march=native``), so a later process only loads it
  (milliseconds);
* a build is atomic: gcc writes into a private temporary directory, and the
  result is copied into a temporary file of the cache directory and renamed
  onto the final name only after gcc succeeded, so a killed process or a
  failed build never leaves a broken library under that name, nor anything
  else in the cache (unless killed inside the copy; such leftovers are
  removed by the next build once an hour old);
* when gcc is missing, the build fails, or ``DESCENTLAB_NATIVE=0`` is set,
  the library stays unavailable for the process (:attr:`NativeLibrary.error`
  says why, logged once at debug level on the ``descentlab.native`` logger)
  and callers keep their eager path; nothing is raised into a step.

The libraries are built with ``-fopenmp``: torch's CPU wheels load their own
``libgomp.so.1``, and the dynamic loader hands a library that needs that
soname the copy already loaded, so the passes run on torch's OpenMP thread
pool (the callers pass ``torch.get_num_threads()`` to every parallel region).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from descentlab.machine import cpu_info

__all__ = ["BuildSettings", "NativeLibrary", "native_cache_dir", "COMPILER", "FLAGS"]

logger = logging.getLogger("descentlab.native")

#: The compiler (a name looked up on PATH, or a path).
COMPILER = "gcc"
#: Flags of every build (``-march=native``: the cache key holds the CPU's feature flags).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")


def native_cache_dir() -> Path:
    """Where built libraries are cached: ``$DESCENTLAB_CACHE_DIR/native`` or
    ``~/.cache/descentlab/native``."""
    root = os.environ.get("DESCENTLAB_CACHE_DIR") or Path.home() / ".cache" / "descentlab"
    return Path(root) / "native"


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``), or the machine name elsewhere."""
    return cpu_info("flags") or os.uname().machine


#: a temporary file of a build older than this (seconds) is a killed build's leftover
STALE_SECONDS = 3600


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Remove the temporary files earlier builds of library ``name`` left in ``folder``
    (killed midway) once they are older than :data:`STALE_SECONDS`; a build running now
    in another process has a younger one, which is left alone."""
    now = time.time()
    for path in folder.glob(f".{name}-*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
        except OSError:  # gone meanwhile, or not ours to remove
            pass


@dataclass(frozen=True)
class BuildSettings:
    """How a :class:`NativeLibrary` is compiled, linked and loaded.

    Attributes:
        compiler: a name looked up on PATH, or a path.
        flags: compiler flags before the source file.
        link: arguments after it (libraries).
        suffix: the source file's extension (``.c``, ``.cpp``).
        key: anything else the build depends on (e.g. torch's version), part of the cache key.
        python: load with :class:`ctypes.PyDLL` (calls hold the GIL and may use the
            Python C API) instead of :class:`ctypes.CDLL` (calls release it).
    """

    compiler: str
    flags: tuple[str, ...]
    link: tuple[str, ...] = ("-lm",)
    suffix: str = ".c"
    key: str = ""
    python: bool = False


class NativeLibrary:
    """One C source, built in the background and loaded with ctypes (see the module docstring).

    ``declare`` is called with the loaded :class:`ctypes.CDLL` to set the
    functions' ``argtypes`` and ``restype`` before the library is handed out.
    """

    def __init__(
        self,
        name: str,
        source: str,
        declare: Callable[[ctypes.CDLL], None],
        *,
        build: Callable[[], BuildSettings] | None = None,
    ) -> None:
        self.name, self.source, self._declare = name, source, declare
        self._settings = build
        self._lib: ctypes.CDLL | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        #: Why the library is unavailable (None while building or once it is loaded).
        self.error: str | None = None
        #: Seconds the last build (or cache load) took, once done.
        self.seconds: float | None = None

    @property
    def ready(self) -> bool:
        """Whether the library is loaded."""
        return self._lib is not None

    def get(self) -> ctypes.CDLL | None:
        """The library if it is loaded, or loaded now from the cache at the first call; else
        start building it in the background and return None (never waits for a build, never
        raises)."""
        if self._lib is not None or self._done.is_set():
            return self._lib
        with self._lock:
            if self._thread is None and not self._done.is_set() and self._load_cached():
                return self._lib
            if self._thread is None:
                self._thread = threading.Thread(target=self._build, daemon=True,
                                                name=f"descentlab-native-{self.name}")
                self._thread.start()
        return None

    def wait(self, timeout: float | None = None) -> ctypes.CDLL | None:
        """Build (or wait for the background build) and return the library, or None if it is
        unavailable (see :attr:`error`)."""
        self.get()
        self._done.wait(timeout)
        return self._lib

    def reset(self) -> None:
        """Forget the loaded library and any failure, so the next :meth:`get` builds again
        (for tests that change the compiler or the cache directory)."""
        with self._lock:
            if self._thread is not None:
                self._done.wait()
            self._lib, self._thread, self.error, self.seconds = None, None, None, None
            self._done.clear()

    # -- building ----------------------------------------------------------------------

    def _build(self) -> None:
        start = time.perf_counter()
        try:
            self._lib = self._load_or_build()
        except Exception as exc:  # any failure leaves the eager path in place
            self.error = f"{type(exc).__name__}: {exc}"
            logger.debug("the %s library is unavailable, eager path kept: %s", self.name,
                         self.error)
        finally:
            self.seconds = time.perf_counter() - start
            self._done.set()

    def _load_cached(self) -> bool:
        """Load the library if the cache holds it already (False on anything else: the
        background build then finds and reports it)."""
        start = time.perf_counter()
        try:
            _, target = self._target()
            if not target.exists():
                return False
            self._lib = self._open(target)
        except Exception:  # the background build finds it again and says why
            return False
        self.seconds = time.perf_counter() - start
        self._done.set()
        return True

    def _target(self) -> tuple[str, Path]:
        """The compiler's path and the cached library's path (raises if unavailable)."""
        if os.environ.get("DESCENTLAB_NATIVE", "1") == "0":
            raise RuntimeError("DESCENTLAB_NATIVE=0")
        settings = self.settings()
        compiler = shutil.which(settings.compiler)
        if compiler is None:
            kind = "C++" if settings.suffix == ".cpp" else "C"
            raise FileNotFoundError(f"no {kind} compiler {settings.compiler!r} on PATH")
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                 timeout=60, check=True).stdout
        key = "\0".join([self.source, " ".join(settings.flags), " ".join(settings.link),
                         settings.key, compiler, version, _cpu_flags()])
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return compiler, native_cache_dir() / f"{self.name}-{digest}.so"

    def _load_or_build(self) -> ctypes.CDLL:
        compiler, target = self._target()
        folder = target.parent
        if target.exists():
            try:
                return self._open(target)
            except OSError as exc:  # not a loadable library: build it again
                logger.debug("rebuilding %s: %s", target, exc)
        folder.mkdir(parents=True, exist_ok=True)
        self._compile(compiler, folder, target)
        return self._open(target)

    def _compile(self, compiler: str, folder: Path, target: Path) -> None:
        """The compiler writes into a private temporary directory; the result is copied into a
        temporary file of ``folder`` and renamed onto ``target``.

        A process killed while the compiler runs (a daemon build thread dies with its
        interpreter) thus leaves nothing in the cache; only a kill inside the copy of a
        few hundred kilobytes can leave a temporary file there, and those of this
        library older than :data:`STALE_SECONDS` are removed at the next build.
        """
        _remove_stale_temporaries(folder, self.name)
        settings = self.settings()
        with tempfile.TemporaryDirectory() as work:
            src = Path(work) / f"{self.name}{settings.suffix}"
            out = Path(work) / f"{self.name}.so"
            src.write_text(self.source, encoding="utf-8")
            done = subprocess.run([compiler, *settings.flags, str(src), "-o", str(out),
                                   *settings.link],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"{settings.compiler} exited with {done.returncode}: "
                                   f"{done.stderr.strip()[-2000:]}")
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as copy, open(out, "rb") as built:
                    shutil.copyfileobj(built, copy)
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def settings(self) -> BuildSettings:
        """How this library is built: its own settings, or gcc with :data:`FLAGS` (read at
        each build, so tests may change :data:`COMPILER`)."""
        return self._settings() if self._settings is not None else BuildSettings(COMPILER, FLAGS)

    def _open(self, path: Path) -> ctypes.CDLL:
        loader = ctypes.PyDLL if self.settings().python else ctypes.CDLL
        lib = loader(str(path))
        self._declare(lib)
        return lib
