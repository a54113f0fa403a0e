# `make demo` and `make test` each do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; pinned so that pip never resolves a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The torch pin first, so that installing the project never pulls another torch.
PIP_INSTALL = $(BIN)/pip install --quiet "$(TORCH_SPEC)" && $(BIN)/pip install --quiet -e

# The demo needs the training extra alone; the tests add theirs (the web demo's gradio, selenium).
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) ".[train]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) ".[train,test]"
	touch $@

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/python -m hf_ddpm.demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_schedulers.py

clean:
	rm -rf $(VENV) build *.egg-info
