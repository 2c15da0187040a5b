"""Build hook: the wheel ships a copy of ``results/*.csv`` inside the package.

``results/`` stays at the top of the repository (the benchmarks write there); the build
copies its CSV files into ``shrinklib/results_data/``, where
:func:`shrinklib.results.read` finds them when shrinklib is installed from a wheel (a
notebook run alone on Colab). Everything else about the build is in ``pyproject.toml``.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGED_FOLDER = "results_data"  # shrinklib.results.PACKAGED_FOLDER


class BuildPyWithResults(build_py):
    """``build_py`` that also copies ``results/*.csv`` to ``shrinklib/results_data/``."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "shrinklib" / PACKAGED_FOLDER
        shutil.rmtree(target, ignore_errors=True)  # no file left from an earlier build
        self.mkpath(str(target))
        for csv in sorted((HERE / "results").glob("*.csv")):
            self.copy_file(str(csv), str(target / csv.name))

    def get_outputs(self, include_bytecode=True):
        target = Path(self.build_lib) / "shrinklib" / PACKAGED_FOLDER
        return super().get_outputs(include_bytecode) + [str(target / p.name)
                                                        for p in sorted((HERE / "results").glob("*.csv"))]


setup(cmdclass={"build_py": BuildPyWithResults})
