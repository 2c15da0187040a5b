"""The house rules DESIGN.md states, checked on the source so that the next family cannot drift.

* No module imports another module's private (underscore) name: machinery two modules need
  is public where it belongs (``shrinklib.arch``, ``shrinklib.calibration``, ``shrinklib._checks``).
* Benchmarks import shrinklib, never each other, and never edit ``sys.path``.
* Every module of ``shrinklib`` has its mirror test file.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "shrinklib").rglob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
TESTS = sorted((ROOT / "tests").rglob("*.py"))
#: Private modules that exist to be shared: the argument checks every family uses.
SHARED = {"_checks"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path) -> list[str]:
    """``module.name`` for each underscore name ``path`` imports from a shrinklib module other than itself."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        ours = node.level or (node.module or "").startswith("shrinklib") if isinstance(node, ast.ImportFrom) else False
        if ours:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name not in SHARED:
                    found.append(f"{'.' * node.level}{node.module or ''}.{alias.name}")
    return found


@pytest.mark.parametrize("path", LIBRARY + BENCHMARKS + TESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_name(path):
    assert _private_imports(path) == []


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_a_benchmark_imports_shrinklib_not_another_benchmark(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    siblings = {p.stem for p in BENCHMARKS}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & siblings, f"{path.name} imports the benchmark(s) {sorted(imported & siblings)}"
    assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"


def _mirror(path: Path) -> Path:
    relative = path.relative_to(ROOT / "shrinklib")
    return ROOT / "tests" / relative.parent / f"test_{relative.stem.lstrip('_')}.py"


MODULES = [p for p in LIBRARY if p.name not in ("__init__.py", "__main__.py")]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_has_its_mirror_test_file(path):
    assert _mirror(path).exists(), f"{path.relative_to(ROOT)} has no {_mirror(path).relative_to(ROOT)}"


def test_the_checks_above_can_fail(tmp_path):
    """The private-import check is not vacuous: it sees a private name, also in a relative import."""
    source = tmp_path / "m.py"
    source.write_text("from shrinklib.prune.magnitude import _helper, public\nfrom .conftest import _make, make\n"
                      "from shrinklib import _checks\nfrom numpy import _private_but_not_ours\n")
    assert _private_imports(source) == ["shrinklib.prune.magnitude._helper", ".conftest._make"]
