import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from shrinklib import cache


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _slow_build(folder: Path, log: str) -> None:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    (folder / "weights.bin").write_bytes(b"x" * 100_000)


def _ask(cache_root: str, log: str, out: mp.Queue) -> None:
    os.environ[cache.ENV_VAR] = cache_root
    folder = cache.cached_folder("entry", lambda f: _slow_build(f, log))
    out.put((str(folder), (folder / "weights.bin").stat().st_size))


def test_two_processes_build_an_entry_once_and_both_read_it_whole(tmp_cache, tmp_path):
    log = tmp_path / "builds.log"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ask, args=(str(tmp_cache), str(log), out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1  # built once
    assert results[0] == results[1] == (str(tmp_cache / "entry"), 100_000)
    assert not [p for p in tmp_cache.iterdir() if ".building-" in p.name]  # no leftovers


def test_a_failing_build_publishes_nothing_and_a_retry_builds(tmp_cache):
    def broken(folder):
        (folder / "half").write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cache.cached_folder("entry", broken)
    assert not (tmp_cache / "entry").exists()
    folder = cache.cached_folder("entry", lambda f: (f / "ok").write_text("done"))
    assert (folder / "ok").read_text() == "done" and not (folder / "half").exists()


def test_an_unfinished_entry_is_rebuilt(tmp_cache):
    (tmp_cache / "entry").mkdir(parents=True)
    (tmp_cache / "entry" / "stale").write_text("crash left me")
    folder = cache.cached_folder("entry", lambda f: (f / "ok").write_text("done"))
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "ok"]


def test_unwritable_cache_folder_gives_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.ENV_VAR, str(blocker / "cache"))
    with pytest.raises(PermissionError, match=r"cache folder .* is not writable.*Set the environment variable SHRINKLIB_CACHE"):
        cache.cache_dir()


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_bad_entry_names(tmp_cache, name):
    with pytest.raises(ValueError, match="plain folder name"):
        cache.cached_folder(name, lambda f: None)
