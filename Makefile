# Two commands do all set-up: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.turndiff-installed
TORCH  := torch==2.13.0

.PHONY: demo test test-slow venv bench clean

venv: $(STAMP)

# CPU build of torch when no GPU is present: the local +cpu wheel where pip's
# find-links has one (dependencies from PyPI), else PyTorch's CPU index; the default
# (CUDA) build from PyPI when a GPU is present.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing CUDA $(TORCH)"; $(PY) -m pip install -q $(TORCH); \
	else \
		echo "no GPU: installing CPU $(TORCH)"; \
		$(PY) -m pip install -q "$(TORCH)+cpu" 2>/dev/null || \
		$(PY) -m pip install -q $(TORCH) --index-url https://download.pytorch.org/whl/cpu \
			--extra-index-url https://pypi.org/simple; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/turndiff demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) benchmarks/bench_projectors.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
