"""The book's rules, as tests.

Fast checks on the sources (table of contents, notebook hygiene, citations, the one
repository URL), and one structural build: ``jupyter-book build -W --keep-going`` with
notebook execution switched off, into a temporary folder. Executing the notebooks is
the job of ``pytest --nbval-lax`` (see DESIGN.md), not of these tests.

The build test is marked ``book``; it runs by default and can be left out with
``-m "not book"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
MATHJAX_ENTRY = ROOT / "vendor" / "mathjax" / "_static" / "mathjax" / "tex-chtml.js"
VENDOR_MATHJAX = ROOT / "tools" / "vendor_mathjax.sh"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _notebooks() -> list[Path]:
    return sorted(
        p for p in CHAPTERS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


def _load_nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _toc_files() -> list[str]:
    """Every `root`/`file` entry of _toc.yml, as written (no extension)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _strip_ext(name: str) -> str:
    for ext in (".ipynb", ".md"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _book_sources() -> list[Path]:
    """The Markdown and notebook files the book is built from."""
    files = []
    for entry in _toc_files():
        stem = ROOT / _strip_ext(entry)
        for ext in (".md", ".ipynb"):
            if stem.with_suffix(ext).is_file():
                files.append(stem.with_suffix(ext))
    files += [p for p in CHAPTERS.rglob("*.md") if ".ipynb_checkpoints" not in p.parts]
    files += _notebooks()
    return sorted(set(files))


def _text_of(path: Path) -> str:
    """Markdown text of a page: the file itself, or a notebook's markdown cells."""
    if path.suffix == ".ipynb":
        nb = _load_nb(path)
        return "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


# {cite}`a,b`, {cite:p}`a`, {cite:t}`a`, {cite:ps}`a`, {footcite:t}`a` ... MyST roles.
CITE_ROLE = re.compile(r"\{(?:foot)?cite(?::[a-z]+)?\}`([^`]+)`")


def _bib_keys() -> set[str]:
    from pybtex.database import parse_file

    return set(parse_file(str(ROOT / "references.bib"), bib_format="bibtex").entries)


# ---------------------------------------------------------------------------------------
# table of contents
# ---------------------------------------------------------------------------------------


def test_every_toc_entry_exists():
    missing = [
        entry
        for entry in _toc_files()
        if not any(
            (ROOT / (_strip_ext(entry) + ext)).is_file() for ext in (".md", ".ipynb")
        )
    ]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_notebook_is_in_the_toc():
    listed = {_strip_ext(entry) for entry in _toc_files()}
    unlisted = [
        str(p.relative_to(ROOT))
        for p in _notebooks()
        if p.relative_to(ROOT).with_suffix("").as_posix() not in listed
    ]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"


# ---------------------------------------------------------------------------------------
# notebooks
# ---------------------------------------------------------------------------------------

NOTEBOOKS = _notebooks()
NB_IDS = [str(p.relative_to(CHAPTERS)) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_notebook_has_no_stored_outputs(path):
    nb = _load_nb(path)
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} have stored outputs or execution counts; "
        "clear them (e.g. `jupyter nbconvert --clear-output --inplace`)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_notebook_starts_with_a_title(path):
    cells = _load_nb(path)["cells"]
    assert cells, f"{path.name} is empty"
    first = cells[0]
    assert first["cell_type"] == "markdown" and _source(first).startswith("# "), (
        f"{path.name}: cell 1 must be a markdown cell starting with '# ' (the title)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_notebook_cell_2_is_the_generated_colab_setup_cell(path):
    """Cell 2 is exactly the set-up cell that tools/sync_setup_cells.py writes from the
    repository setting in pyproject.toml: the URL reaches notebooks only that way."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from sync_setup_cells import setup_cell_source
    finally:
        sys.path.pop(0)
    cells = _load_nb(path)["cells"]
    assert len(cells) >= 2, f"{path.name}: needs at least the title and the set-up cell"
    assert cells[1]["cell_type"] == "code" and _source(cells[1]) == setup_cell_source(ROOT), (
        f"{path.name}: cell 2 must be the generated Colab set-up cell; run `python tools/sync_setup_cells.py`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_notebook_names_the_repository_only_in_its_setup_cell(path):
    cells = _load_nb(path)["cells"]
    rest = "".join(_source(c) for i, c in enumerate(cells) if i != 1)
    assert "github.com" not in rest, (
        f"{path.name} names github.com outside its set-up cell; the repository URL is one "
        "setting (pyproject.toml, with _config.yml agreeing)"
    )


TEACHER_RECIPE = re.compile(r"\brecipe=([^,)]+)")  # a keyword argument, as PEP 8 writes it


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_notebook_trains_no_teacher(path):
    """A notebook loads the teachers ``make prepare`` builds (zoo.PREPARED_TEACHERS); training one
    more would take about ten minutes, far past the notebook budget."""
    code = "\n".join(_source(c) for c in _load_nb(path)["cells"] if c["cell_type"] == "code")
    recipes = {m.group(1).strip() for m in TEACHER_RECIPE.finditer(code)}
    assert "TeacherRecipe(" not in code and recipes <= {"zoo.SECOND_TEACHER"}, (
        f"{path.name} asks for a teacher recipe make prepare does not build: {sorted(recipes)}"
    )


def test_prepare_builds_the_second_teacher():
    from shrinklib import zoo

    assert zoo.PREPARED_TEACHERS == (zoo.TeacherRecipe(), zoo.SECOND_TEACHER)
    assert zoo.SECOND_TEACHER.training.seed != zoo.TeacherRecipe().training.seed


# ---------------------------------------------------------------------------------------
# configuration and citations
# ---------------------------------------------------------------------------------------


def test_config_and_pyproject_name_the_same_repository():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    book_url = config["repository"]["url"].rstrip("/")
    package_url = pyproject["project"]["urls"]["Repository"].rstrip("/")
    assert book_url == package_url, (
        f"_config.yml repository.url {book_url!r} != pyproject.toml "
        f"[project.urls] Repository {package_url!r}"
    )


def test_every_cited_key_is_in_references_bib():
    keys = _bib_keys()
    unknown = {}
    for path in _book_sources():
        for match in CITE_ROLE.finditer(_text_of(path)):
            for key in (k.strip() for k in match.group(1).split(",")):
                if key and key not in keys:
                    unknown.setdefault(str(path.relative_to(ROOT)), []).append(key)
    assert not unknown, f"{{cite}} keys missing from references.bib: {unknown}"


GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`:]+)(?::[^`]*)?`")  # {glue:text}`key:.1%`
GLUE_CALL = re.compile(r"""\bglue\(\s*["']([^"']+)["']""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NB_IDS)
def test_every_glued_key_is_glued(path):
    """Numbers quoted in the text come from the run: each {glue} key has a glue() call."""
    cells = _load_nb(path)["cells"]
    used = {m.group(1) for c in cells if c["cell_type"] == "markdown" for m in GLUE_ROLE.finditer(_source(c))}
    glued = {m.group(1) for c in cells if c["cell_type"] == "code" for m in GLUE_CALL.finditer(_source(c))}
    assert used <= glued, f"{path.name} quotes {{glue}} keys no code cell glues: {sorted(used - glued)}"


# ---------------------------------------------------------------------------------------
# the structural build
# ---------------------------------------------------------------------------------------


class _AssetLinks(HTMLParser):
    """Collects the URLs a page loads as it is viewed: scripts, stylesheets, images."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            rel = (attrs.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "modulepreload", "icon")):
                self.urls.append(attrs["href"])


def _ensure_mathjax():
    if MATHJAX_ENTRY.is_file():
        return
    if shutil.which("npm") is None:
        pytest.fail(f"{MATHJAX_ENTRY} is missing and npm is not available to vendor it")
    subprocess.run(["bash", str(VENDOR_MATHJAX)], check=True, cwd=ROOT)
    assert MATHJAX_ENTRY.is_file(), f"{VENDOR_MATHJAX} did not produce {MATHJAX_ENTRY}"


def _config_without_execution(dest: Path) -> Path:
    """A copy of _config.yml with notebook execution off, written to `dest`."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    # Unexecuted notebooks have no glued values; test_every_glued_key_is_glued checks the
    # keys statically and the executed build (make book) resolves them.
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["suppress_warnings"] = list(sphinx_config.get("suppress_warnings", [])) + ["mystnb.glue"]
    # jupyter-book resolves local extension paths against the config file's folder.
    local = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, path in local.items():
        local[name] = str((ROOT / path).resolve())
    path = dest / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def structural_build(tmp_path_factory):
    _ensure_mathjax()
    work = tmp_path_factory.mktemp("book")
    config = _config_without_execution(work)
    jb = shutil.which("jupyter-book")
    prefix = (
        [jb]
        if jb
        else [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    )
    cmd = prefix + [
        "build", str(ROOT),
        "--config", str(config),
        "--path-output", str(work),
        "--all", "-W", "--keep-going",
    ]  # fmt: skip
    env = dict(os.environ, NO_COLOR="1", PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - start
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # colour codes
    (work / "build.log").write_text(log, encoding="utf-8")
    return {
        "returncode": proc.returncode,
        "log": log,
        "html": work / "_build" / "html",
        "seconds": seconds,
    }


@pytest.mark.book
def test_structural_build_succeeds_without_warnings(structural_build):
    log = structural_build["log"]
    warnings = [
        line
        for line in log.splitlines()
        if "WARNING" in line or "Validation errors in config" in line
    ]
    assert structural_build["returncode"] == 0 and not warnings, (
        f"jupyter-book build failed (rc={structural_build['returncode']}):\n"
        + ("\n".join(warnings) or log[-5000:])
    )
    assert (structural_build["html"] / "intro.html").is_file()


@pytest.mark.book
def test_built_pages_load_nothing_from_the_network(structural_build):
    html_dir = structural_build["html"]
    if structural_build["returncode"] != 0:
        pytest.skip("the structural build failed; see the test above")
    remote = {}
    mathjax_pages = 0
    for page in sorted(html_dir.rglob("*.html")):
        parser = _AssetLinks()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            if re.match(r"^(https?:)?//", url):
                remote.setdefault(str(page.relative_to(html_dir)), []).append(url)
            elif "mathjax" in url.lower():
                mathjax_pages += 1
                target = (page.parent / url.split("?")[0]).resolve()
                assert target.is_file(), f"{page.name} loads {url}, which is not in the site"
    assert not remote, f"pages load assets from the network: {remote}"
    assert mathjax_pages, "no page loads the local MathJax; is there any math in the book?"
