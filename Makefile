# Each target installs what it needs into .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build, installed before the project so the torch range is already met. Where pip
# reads plain PyPI (which serves the CUDA build on Linux x86-64), add
# TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test lint bench clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamclf demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check worker model tests benchmarks
	$(BIN)/mypy worker model

bench: $(STAMP)
	$(BIN)/streamclf bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
