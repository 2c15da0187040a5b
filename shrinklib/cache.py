"""The on-disk cache for things built once per machine (the fine-tuned teacher, the
dequantized decoder, the results table).

Location: ``$SHRINKLIB_CACHE`` or ``~/.cache/shrinklib``. Several processes may ask for
the same entry at once (the tests run notebooks two at a time), so an entry is built
under a file lock, into a temporary folder beside its final place, and published with
one atomic ``os.rename``: a reader sees either no entry or a complete one, and the work
is done once.

Reading needs no write access: a finished entry is returned without creating, locking or
touching anything, so a shared or read-only cache (a course's machines, a mounted folder)
that already holds the models works. Only building an entry needs a writable cache.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from filelock import FileLock

ENV_VAR = "SHRINKLIB_CACHE"
_COMPLETE = ".complete"


def _location() -> Path:
    """Where the cache folder is; nothing is created or checked."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "shrinklib").expanduser()


def cache_dir() -> Path:
    """The cache folder, created if needed and checked writable (for callers that write to it);
    a clear ``PermissionError`` when it cannot be written."""
    root = _location()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
        probe.close()
    except OSError as err:
        raise PermissionError(
            f"The shrinklib cache folder '{root}' is not writable ({err.strerror or err}). "
            f"Set the environment variable {ENV_VAR} to a folder you can write to."
        ) from err
    return root


def lock_for(name: str) -> FileLock:
    """The inter-process lock that guards the cache entry ``name``."""
    return FileLock(str(cache_dir() / f".{name}.lock"))


def is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE).exists()


def cached_folder(name: str, build: Callable[[Path], None]) -> Path:
    """Return the cache folder ``name``, calling ``build(tmp_folder)`` once to fill it.

    ``build`` writes its files into the empty folder it is given. It runs at most once
    across processes: the first caller builds under the lock, the others wait for the
    lock and then find the finished entry. If ``build`` raises, nothing is published.
    A finished entry is returned without writing anything (no folder made, no lock taken),
    so a read-only cache that holds it works; only a build needs write access.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"cache entry name must be a plain folder name, got {name!r}")
    if is_complete(_location() / name):  # reading: no write of any kind
        return _location() / name
    final = cache_dir() / name
    with lock_for(name):
        if is_complete(final):  # another process built it while we waited
            return final
        if final.exists():  # a leftover from a crash before publication
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}.building-"))
        try:
            build(tmp)
            (tmp / _COMPLETE).touch()
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
