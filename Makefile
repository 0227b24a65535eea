# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,data]'
	touch $@

demo: setup
	$(VENV)/bin/onecycle demo

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# mutation testing (mutmut, the `mutation` extra), one module at a time against its own tests;
# `make mutation MODULES="schedules optim/scheduler"` for some of them
.PHONY: mutation
mutation: setup
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[mutation]'
	MUTMUT_WORKERS=$${MUTMUT_WORKERS:-1} benchmarks/mutation.sh $(MODULES)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
