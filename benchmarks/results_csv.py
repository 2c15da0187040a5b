"""Write benchmark rows into ``results/*.csv``, replacing the rows a rerun measures again.

A benchmark that runs its experiments one at a time (or in two processes side by side,
each with its own ``--only``) calls :func:`upsert` after every experiment: the rows with
the same key are replaced, the others kept, and a cut-short run keeps what it measured.
The file is locked while it is read and rewritten, so two processes never lose each
other's rows.
"""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Sequence

import pandas as pd


def upsert(out: Path, rows: Sequence[dict], key: Sequence[str]) -> int:
    """Merge ``rows`` into the CSV at ``out`` by ``key``; return how many rows it holds now."""
    if not rows:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(list(rows))
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists() and out.stat().st_size:
            old = pd.read_csv(out)
            replaced = old.set_index(list(key)).index.isin(frame.set_index(list(key)).index)
            frame = pd.concat([old[~replaced], frame], ignore_index=True)
        frame.to_csv(out, index=False)
    return len(frame)
