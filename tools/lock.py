"""The lock file ``constraints.txt``: the exact version of every package ``make install`` installs.

``requirements.txt`` keeps ranges (for Colab and other users); ``make install`` installs it
with ``-c constraints.txt``, so a fresh machine gets the versions the suite last passed
with. "Every package" is the closure of what the Makefile asks for (torch,
``requirements.txt``, ``pyproject.toml``'s dependencies, the asset packages of
``requirements-assets.txt``, which are installed without their dependencies) over the
installed packages' own requirements, with their environment markers and extras.

    python tools/lock.py --check   # exit 1 if a package of the closure is unpinned or pinned to another version
    python tools/lock.py --write   # rewrite constraints.txt from this environment

Upgrade a pin by installing the new version, running ``make test``, then ``--write``, and
say in the commit message that the suite passed with it.
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
HEADER = """\
# The exact versions `make test` was last verified with (python tools/lock.py --write).
# make install uses it as pip's constraints: pip install -c constraints.txt -r requirements.txt
# Upgrading a pin is a commit that says the suite passed with it.
"""


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def roots() -> tuple[list[Requirement], list[Requirement]]:
    """``(with_dependencies, without)``: what the Makefile asks pip for, as requirements."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    with_deps = [Requirement("torch")] + [Requirement(line) for line in _requirement_lines(ROOT / "requirements.txt")]
    with_deps += [Requirement(line) for line in pyproject["project"]["dependencies"]]
    with_deps += [Requirement(line) for line in pyproject["build-system"]["requires"]]
    without = [Requirement(line) for line in _requirement_lines(ROOT / "requirements-assets.txt")]
    return with_deps, without


def installed_closure() -> dict[str, str]:
    """``{canonical name: installed version}`` of the roots and, recursively, what they require here."""
    with_deps, without = roots()
    versions: dict[str, str] = {}
    todo = [(req, True) for req in with_deps] + [(req, False) for req in without]
    expanded: set[tuple[str, frozenset]] = set()
    while todo:
        req, follow = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):  # a root such as triton's
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise LookupError(f"{req.name} is required ({req}) but not installed: run make install first") from None
        versions[name] = dist.version
        key = (name, frozenset(req.extras))
        if not follow or key in expanded:
            continue
        expanded.add(key)
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                sub.marker = None
                todo.append((sub, True))
    return versions


def read_lock(path: Path = LOCK) -> dict[str, str]:
    pins = {}
    for line in _requirement_lines(path):
        req = Requirement(line)
        (spec,) = req.specifier
        if spec.operator != "==":
            raise ValueError(f"{path.name}: {line!r} is not an exact pin (name==version)")
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _public(version: str) -> str:
    """``2.13.0`` for ``2.13.0+cpu``: a pin without a local label matches any local build."""
    return version.split("+", 1)[0]


def problems(lock: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What is wrong with ``lock`` for the ``installed`` closure, one line each (empty: all pinned)."""
    found = []
    for name, version in sorted(installed.items()):
        if name not in lock:
            found.append(f"{name}=={_public(version)} is installed by make install but not pinned")
        elif _public(lock[name]) != _public(version):
            found.append(f"{name} is pinned to {lock[name]} but {version} is installed")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 unless constraints.txt pins this environment")
    mode.add_argument("--write", action="store_true", help="rewrite constraints.txt from this environment")
    args = parser.parse_args(argv)
    installed = installed_closure()
    if args.write:
        LOCK.write_text(HEADER + "".join(f"{name}=={_public(v)}\n" for name, v in sorted(installed.items())))
        print(f"wrote {len(installed)} pins to {LOCK.name}")
        return 0
    found = problems(read_lock(), installed)
    for line in found:
        print(line, file=sys.stderr)
    print(f"{LOCK.name}: {len(installed)} installed packages, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
