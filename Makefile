# Two entry points for a fresh machine with Python 3.11+:
#   make demo   set up .venv, serve the bundled demo corpus on loopback, ingest it
#   make test   set up .venv, build the local Prism runner (cached in .runners/; needs Go),
#               lint, run the whole test suite (the `runners` tests included)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean runners

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[test]' \
	  || $(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/newsbeam demo --output demo-output

runners:
	deploy/local-runners.sh

test: $(STAMP) runners
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) demo-output build *.egg-info
