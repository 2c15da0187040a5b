"""shrinklib: the library behind the book *Compressing Deep Learning Models for Text*.

Subpackages hold one family of methods each; the core modules are ``data`` (the
corpora), ``zoo`` (the models), ``measure`` (the measurement protocol), ``train`` (the
one training loop), ``plot`` and ``utils``. ``shrinklib.save`` / ``shrinklib.load``
store any model, compressed or not, as safetensors plus a JSON record of its changes.
"""
import shrinklib.kernels  # noqa: F401  (first: sets TRITON_INTERPRET on CPU-only machines before triton loads)
from shrinklib.serialize import load, save

__version__ = "0.1.0"
__all__ = ["save", "load", "__version__"]
