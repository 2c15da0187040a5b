# Shrink: the two commands a newcomer types are `make book` and `make test`; each
# installs whatever is missing first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# Tests and the book always use the shrinklib of this checkout.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Two notebooks run at once on two cores: OpenMP threads that spin while they wait
# would slow each other down tens of times; passive waiting keeps timings honest.
export OMP_WAIT_POLICY := PASSIVE
NOTEBOOKS = $(shell find chapters -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)
INSTALLED := .make/installed

.PHONY: install book test test-cpu-dispatch prepare results check-rendered clean

## install: torch first (the local CPU build, unless a torch is already there, as on
## Colab), then the book's requirements, then the offline assets without their
## dependencies, then shrinklib itself (editable, for Jupyter), then MathJax. Versions
## come from constraints.txt, the lock the suite last passed with (tools/lock.py).
install: $(INSTALLED) vendor/mathjax

$(INSTALLED): requirements.txt requirements-assets.txt pyproject.toml constraints.txt
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -c constraints.txt torch
	$(PIP) install -c constraints.txt -r requirements.txt
	$(PIP) install --no-deps -r requirements-assets.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	@mkdir -p $(dir $@) && touch $@

vendor/mathjax: tools/vendor_mathjax.sh
	bash tools/vendor_mathjax.sh
	@touch $@

## prepare: build the cached models once per machine (the fine-tuned teacher, the
## dequantized decoder) so that notebooks and tests only load them.
prepare: install
	$(PYTHON) -m shrinklib prepare

## book: the rendered book in _build/html, every notebook executed (cached).
book: prepare
	jupyter-book build .

## test: unit tests, book rules, the structural build, and every notebook, two at a time;
## then the unit tests again under another CPU dispatch (see test-cpu-dispatch; a minute).
## PYTEST_ARGS adds pytest options, e.g. PYTEST_ARGS=--durations=0 for every cell's time.
PYTEST = $(PYTHON) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-cell-timeout=900 $(PYTEST_ARGS) tests $(NOTEBOOKS)
test: prepare
	$(PYTEST)
	$(CPU_DISPATCH) $(PYTHON) -m pytest -n 2 --dist loadfile -m "not book" tests

## test-cpu-dispatch: the whole suite again as a machine with another CPU computes it:
## torch's plain (non-vectorized) kernels, and at most AVX2 in MKL and oneDNN (so oneDNN's
## int8 kernels lose VNNI). Floating-point sums come out in another order, so an assert
## tuned to one machine's rounding fails here. With the notebooks it takes longer than
## make test, which keeps only the unit tests of it.
CPU_DISPATCH = ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
test-cpu-dispatch: prepare
	$(CPU_DISPATCH) $(PYTEST)

## results: rerun the benchmarks that write results/*.csv (the GPU ones only where CUDA is).
GPU_BENCHMARKS = benchmarks/sparse_kernels.py benchmarks/quant_kernels.py
results: prepare
	@for script in $(filter-out $(GPU_BENCHMARKS),$(wildcard benchmarks/*.py)); do \
		echo "== $$script"; $(PYTHON) $$script || exit 1; done
	@echo "== benchmarks/distill_students.py, the longer BiLSTM and 3-layer runs"
	$(PYTHON) benchmarks/distill_students.py --only BiLSTM --trainings "labels,KD + augmentation" --epochs 6
	$(PYTHON) benchmarks/distill_students.py --only BiLSTM --trainings "KD + augmentation" --epochs 12
	$(PYTHON) benchmarks/distill_students.py --only "3L,3L half-FFN" --trainings "KD + augmentation" --epochs 3
	@for script in $(GPU_BENCHMARKS); do \
		if $(PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
			echo "== $$script"; $(PYTHON) $$script || exit 1; \
		else echo "== $$script skipped: it needs a CUDA GPU"; fi; done

## check-rendered: open the built book in headless Chromium; math and figures must render.
check-rendered:
	@command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	bash tools/check_rendered.sh _build/html chapters/01_foundations/index.html _build/rendered

clean:
	rm -rf _build .make
