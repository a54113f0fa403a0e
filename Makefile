# `make demo`, `make fashion` and `make test` each do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; pinned so that pip never resolves a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo fashion fashion-data test test-fast lint bench clean

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

# Fashion-MNIST's original IDX files, from Debian's package where this machine can install it; elsewhere the demo
# reads the Hub dataset, or a folder of the four files given as --dataset.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
fashion-data:
	@if [ ! -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; \
		else \
			echo "Fashion-MNIST's files are not on this machine. Install them with"; \
			echo "    sudo apt-get install dataset-fashion-mnist"; \
			echo "or run '$(BIN)/python -m hf_ddpm.demo --dataset FOLDER' on a folder of its four IDX files."; \
			echo "Trying the Hub dataset instead."; \
		fi; \
	fi

# DEMO_ARGS passes more flags, e.g. make fashion DEMO_ARGS="--max_train_steps 600".
fashion: $(VENV)/.installed-demo fashion-data
	$(BIN)/python -m hf_ddpm.demo --dataset fashion_mnist $(DEMO_ARGS)

# The tests run one torch thread each (tests/conftest.py) and many wait on subprocesses: one pytest worker per core
# (pytest-xdist), a test file per worker at a time so that a module's shared servers and processes start once.
# TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= auto
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test: install
	$(PYTEST)

# The tests that take no more than a moment each: no training runs of seconds, subprocesses, browser or servers.
test-fast: install
	$(PYTEST) -m "not slow and not browser and not multiprocess"

# ruff's lint and format check, as configured in pyproject.toml; `$(BIN)/ruff format .` applies the format.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/bench_schedulers.py

clean:
	rm -rf $(VENV) build *.egg-info
