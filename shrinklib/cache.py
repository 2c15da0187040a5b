"""The on-disk cache for things built once per machine (the fine-tuned teacher, the
dequantized decoder, the results table).

Location: ``$SHRINKLIB_CACHE`` or ``~/.cache/shrinklib``. Several processes may ask for
the same entry at once (the tests run notebooks two at a time), so an entry is built
under a file lock, into a temporary folder beside its final place, and published with
one atomic ``os.rename``: a reader sees either no entry or a complete one, and the work
is done once.
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


def cache_dir() -> Path:
    """The cache folder, created if needed; a clear error when it cannot be written."""
    root = Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "shrinklib").expanduser()
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
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"cache entry name must be a plain folder name, got {name!r}")
    final = cache_dir() / name
    if is_complete(final):
        return final
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
