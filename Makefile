# Two entry points for a fresh machine with Python 3.11+:
#   make demo   set up .venv, serve the bundled demo corpus on loopback, ingest it
#   make test   set up .venv, build the local Prism runner (cached in .runners/; needs Go),
#               lint, run the whole test suite (the `runners` tests included)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean runners browser

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

# tests/test_report.py opens the HTML report in Debian's headless chromium: installed here
# when missing (as root with apt-get), else the run stops saying what to install.
browser:
	@command -v chromium >/dev/null 2>&1 \
	  || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	       && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "make test needs chromium for tests/test_report.py: apt-get install -y chromium" >&2; exit 1; }

test: $(STAMP) runners browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) demo-output build *.egg-info
