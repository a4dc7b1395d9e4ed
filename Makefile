# cxex-lab: two commands do everything on a fresh machine.
#   make reports   bootstrap .venv, then render the report set from data/sample/
#   make test      bootstrap .venv, then run the test suite (package + notebooks; slow tests in CI or make test-all)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= data/sample
OUT    ?= reports
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS ?=
# the tests marked slow (replicate studies, the report set on the fixture exports) run in CI
# (.ci/run sets CXEX_LAB_CI=1) or with `make test-all`; `make test` leaves them out
SLOW   := $(if $(CXEX_LAB_CI),,-m "not slow")

.PHONY: all venv reports test test-all test-fast lab sample validate bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

venv: $(STAMP)

reports: $(STAMP)
	$(VENV)/bin/cxex-lab run --data $(DATA) --out $(OUT) --jobs $(JOBS)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup $(SLOW) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow and not browser" $(PYTEST_ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

sample: $(STAMP)
	$(VENV)/bin/cxex-lab simulate --out $(DATA) --seed 20261123 --latent -p orphan_responses=25

validate: $(STAMP)
	$(VENV)/bin/cxex-lab validate $(DATA)

bench: $(STAMP)
	$(PY) benchmarks/linkage.py
	$(PY) benchmarks/riclpm.py
	$(PY) benchmarks/reports.py

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache
