# The two commands of the README: `make serve` installs and serves, `make test` installs and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: install serve demo test

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: its CPU wheel; any looser spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# The versions of requirements.lock (what the container installs, with hashes) for every package it holds.
	sed 's/ --hash=.*//' requirements.lock > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/autoroute serve --config config.yaml

demo: install
	$(VENV)/bin/autoroute fake-upstream & trap 'kill $$!' EXIT; \
	$(VENV)/bin/autoroute serve --config examples/local-fake.yaml

test: install
	bash .ci/install-chromium
	$(VENV)/bin/ruff check proxy router_plugins
	$(VENV)/bin/ruff format --check proxy router_plugins
	$(VENV)/bin/mypy
	$(PY) -m pytest
