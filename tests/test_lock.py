"""The lock file pins every package `make install` installs (tools/lock.py)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lock_tool():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_tool()


def test_constraints_pin_every_installed_requirement():
    """What `pip freeze` shows of make install's packages is exactly what constraints.txt pins."""
    installed = lock.installed_closure()
    assert {"torch", "transformers", "datasets", "nbval", "jupyter-book", "huggingface-hub"} <= installed.keys()
    found = lock.problems(lock.read_lock(), installed)
    assert not found, "constraints.txt is stale (python tools/lock.py --write after a passing make test):\n" + "\n".join(found)


def test_check_reports_a_missing_or_different_pin():
    assert lock.problems({"torch": "2.13.0"}, {"torch": "2.13.0+cpu"}) == []
    assert lock.problems({"torch": "2.13.0"}, {"torch": "2.13.0", "tqdm": "4.67.1"}) == [
        "tqdm==4.67.1 is installed by make install but not pinned"]
    assert lock.problems({"torch": "2.12.0"}, {"torch": "2.13.0+cpu"}) == [
        "torch is pinned to 2.12.0 but 2.13.0+cpu is installed"]


def test_lock_holds_exact_pins_only(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# comment\ntorch==2.13.0  # why\n")
    assert lock.read_lock(path) == {"torch": "2.13.0"}
    path.write_text("torch>=2.13\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        lock.read_lock(path)


def test_makefile_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -r requirements.txt" in makefile
