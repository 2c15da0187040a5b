"""Write the Colab set-up cell (cell 2) of every notebook from one template.

The repository address is one setting, ``[project.urls] Repository`` in
``pyproject.toml`` (``_config.yml``'s ``repository.url`` must agree; the tests check).
Notebooks get it only through this generated cell, so after changing the setting run

    python tools/sync_setup_cells.py

and ``tests/test_book.py`` fails until every notebook's set-up cell matches.
"""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = '''# Set-up. On Colab, install shrinklib and the offline models and corpora.
# Elsewhere (make book, make test, Jupyter after make install): nothing to do.
import subprocess
import sys

if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["shrinklib @ git+{repository}"], check=True)
    subprocess.run([sys.executable, "-m", "shrinklib", "install-assets"], check=True)'''


def repository_url(root: Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def setup_cell_source(root: Path = ROOT) -> str:
    return TEMPLATE.format(repository=repository_url(root))


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def sync(path: Path, source: str) -> bool:
    """Rewrite cell 2 of ``path`` to ``source``; True if the file changed."""
    nb = json.loads(path.read_text())
    cell = {"cell_type": "code", "execution_count": None, "id": "colab-setup", "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True)}
    cells = nb["cells"]
    if len(cells) > 1 and cells[1]["cell_type"] == "code" and "google.colab" in "".join(cells[1]["source"]):
        if "".join(cells[1]["source"]) == source and cells[1].get("id") == "colab-setup":
            return False
        cell["metadata"] = cells[1].get("metadata", {})
        cells[1] = cell
    else:
        cells.insert(1, cell)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


if __name__ == "__main__":
    source = setup_cell_source()
    changed = [p for p in notebooks() if sync(p, source)]
    for p in changed:
        print(f"updated {p.relative_to(ROOT)}")
    sys.exit(0)
