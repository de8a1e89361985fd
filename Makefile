# The two commands of the README: `make serve` installs and serves, `make test` installs and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: install serve demo test postgres

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

# The store's tests run on SQLite and on a PostgreSQL cluster they start themselves (tests/postgres.py); without the
# server binaries those are skipped. `make postgres` installs them (Debian/Ubuntu; root or sudo); .ci/run does.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries: installed"; \
	else \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	fi

test: install
	bash .ci/install-chromium
	$(VENV)/bin/ruff check proxy router_plugins
	$(VENV)/bin/ruff format --check proxy router_plugins
	$(VENV)/bin/mypy
	$(PY) -m pytest
