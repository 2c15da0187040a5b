"""Test-wide settings: nothing reaches a model hub, plots draw off-screen, threads wait passively."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Notebook kernels started by this session inherit it: two notebooks on two cores must
# not spin-wait on each other's OpenMP threads (see the Makefile).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
