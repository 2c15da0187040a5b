import builtins
import contextlib
import io
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

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


# ----------------------------------------------------------------------------------
# A read-only cache holding finished models is readable

def _tree(root: Path) -> dict:
    """Every path under ``root`` with its mode, size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


@contextlib.contextmanager
def read_only(root: Path):
    """``root`` made read-only, and every write below it refused with PermissionError even for
    root (whom chmod does not stop); on leaving, asserts that nothing there changed."""
    root = root.resolve()

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError):
            return False

    def guard(name, real, writes=lambda *a, **k: True):
        def guarded(path, *args, **kwargs):
            if inside(path) and writes(*args, **kwargs):
                raise PermissionError(13, f"read-only cache: {name}", str(path))
            return real(path, *args, **kwargs)
        return guarded

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    open_writes = lambda mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = _tree(root)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("mkdir", "rename", "replace", "remove", "unlink", "rmdir", "utime", "chmod", "symlink", "link"):
                patch.setattr(os, name, guard(f"os.{name}", getattr(os, name)))
            patch.setattr(os, "open", guard("os.open", os.open, lambda flags, *a, **k: bool(flags & write_flags)))
            patch.setattr(builtins, "open", guard("open", builtins.open, open_writes))
            patch.setattr(io, "open", guard("io.open", io.open, open_writes))
            yield root
    finally:
        after = _tree(root)
        for p, mode in modes.items():
            p.chmod(mode)
    assert after == before, "the read-only cache was written to"


def _finished(root: Path, name: str, write) -> Path:
    tmp = root / f".{name}.building-x"
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / cache._COMPLETE).touch()
    os.rename(tmp, root / name)
    return root / name


def test_a_finished_entry_is_read_from_a_read_only_cache_without_writing(tmp_cache):
    _finished(tmp_cache, "entry", lambda f: (f / "weights.bin").write_bytes(b"w"))

    def must_not_build(folder):
        raise AssertionError("a finished entry was built again")

    with read_only(tmp_cache):
        folder = cache.cached_folder("entry", must_not_build)
        assert (folder / "weights.bin").read_bytes() == b"w"
    assert folder == tmp_cache / "entry"


def test_a_missing_entry_in_a_read_only_cache_is_a_clear_error(tmp_cache):
    _finished(tmp_cache, "other", lambda f: None)
    with read_only(tmp_cache):
        with pytest.raises(PermissionError, match=r"cache folder .* is not writable.*Set the environment variable SHRINKLIB_CACHE"):
            cache.cached_folder("entry", lambda f: (f / "x").write_text("x"))


def test_the_teacher_loads_from_a_read_only_cache(tmp_cache):
    """The way a course shares one prepared cache: zoo.teacher reads it, writes nothing."""
    from transformers import AutoTokenizer

    from shrinklib import assets, serialize, zoo

    model = zoo.tiny_bert()
    tokenizer = AutoTokenizer.from_pretrained(assets.minilm_folder())
    _finished(tmp_cache, zoo.teacher_cache_name("rt"), lambda f: serialize.save(model, f, tokenizer=tokenizer))
    with read_only(tmp_cache):
        loaded, loaded_tokenizer = zoo.teacher("rt")
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded_tokenizer("a film")["input_ids"] == tokenizer("a film")["input_ids"]
