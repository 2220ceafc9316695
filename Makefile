# The set-up commands of the README: `make demo`, `make test` and `make lint` (ruff, the import-layer contract
# and mypy on the typed modules, all configured in pyproject.toml; CI runs `make lint test`). Each builds .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install lint

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first and alone, from local disk; the constraints keep everything else on it.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,resumes]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/finesieve demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy
