# Quick start: `make run` (main job on the bundled samples, SQLite) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

NODE_STAMP := node_modules/.package-lock.json
# The Functions Python worker library for tests/test_functions_runtime.py, pinned in the script.
RUNTIME_STAMP := .runtime/.installed-$(shell cksum < devtools/install_functions_runtime.py | cut -d' ' -f1)

.PHONY: install install-node install-runtime install-browser scan run run-files test lint unit fuzz bench samples clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else "Python 3.11 or 3.12 is needed (azure-functions 1.x)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "Installing Python packages into $(VENV) (about a minute on a fresh machine)"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@echo "Installing the psaudit command (editable: it runs this checkout from any folder)"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# Azurite (Table Storage emulator) for the tests, pinned in package-lock.json, into ./node_modules
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20) is needed for Azurite, used by the Table store tests"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install-node: $(NODE_STAMP)

# azure-functions-runtime (Python >= 3.13 by its metadata; runs on 3.11) into .runtime/, never
# into the app's requirements: the tests drive function_app.py inside it.
$(RUNTIME_STAMP): devtools/install_functions_runtime.py | $(STAMP)
	@echo "Installing the Functions Python worker library (azure-functions-runtime) into .runtime/"
	$(PY) -m devtools.install_functions_runtime .runtime
	@rm -f .runtime/.installed-*
	@touch $@

install-runtime: $(RUNTIME_STAMP)

## run: the main job on one machine: local Service Bus broker -> samples -> worker -> SQLite
run: install
	$(PY) -m devtools.local_run

## run-files: the quick look without a broker: the sample files straight into the store
run-files: install
	$(PY) -m shared.cli run
	$(PY) -m shared.cli entries

## test: lint, type-check, scan the Bicep and run every test
test: lint scan unit

# A static security scan of infra/*.bicep, offline (--skip-download), in a venv of its own
# (checkov pins many packages). Skips and their reasons: infra/checkov-skips.txt.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	@echo "Installing checkov 3.3.30 into .venv-checkov for the Bicep scan (about 30 s)"
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30

scan: $(CHECKOV)
	BC_SKIP_MAPPING=TRUE $(CHECKOV) -d infra --framework bicep --compact --quiet --skip-download \
		--skip-check $$(grep -o '^CKV_[A-Z_0-9]*' infra/checkov-skips.txt | paste -sd, -)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

install-browser:
	bash devtools/install_chromium.sh

unit: install install-node install-runtime install-browser
	$(PY) -m pytest

## fuzz: the long hypothesis profile over the decoder (20,000 examples per property)
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_fuzz.py tests/test_properties.py

## bench: throughput vs the parse floor, the naive baseline, Table store CPU per entry (lean and
## SDK transactions), cold start, memory, the drain of the local broker (bare loop, worker into
## SQLite, into Table on Azurite; with 2/5/10 ms round trips), the Functions path before and
## after issue 36, and the typed-decode probe
bench: install install-node install-runtime
	$(PY) -m bench.run
	$(PY) -m bench.numbers
	$(PY) -m bench.binary
	$(PY) -m bench.bodies
	$(PY) -m bench.sqlite_schema
	$(PY) -m bench.table_batch
	$(PY) -m bench.table_batch --batch 100
	$(PY) -m bench.drain
	$(PY) -m bench.drain --settle-latency-ms 2 --receive-latency-ms 2 --variants bare sqlite sqlite-each
	for ms in 2 5 10; do $(PY) -m bench.drain -n 1500 --rounds 2 --settle-latency-ms $$ms \
	  --receive-latency-ms $$ms --table-latency-ms $$ms \
	  --variants bare sqlite sqlite-serial table table-serial || exit 1; done
	$(PY) -m bench.functions_path
	$(PY) -m bench.hostile
	$(PY) -m bench.worker_memory
	$(PY) -m bench.typed_decode

## samples: the bundled samples against samples/expected.json (in the repo); then, when the
## team's handout folder is beside the repo, its own checker too
samples: install
	$(PY) -m pytest -q tests/test_samples.py
	@if [ -f ../shared/tools/check_samples.py ]; then $(PY) ../shared/tools/check_samples.py --python $(PY) samples; \
	else echo "(../shared/tools/check_samples.py is not beside the repo: the team checker was skipped)"; fi

clean:
	rm -rf $(VENV) .venv-checkov node_modules .runtime .data .pytest_cache .mypy_cache .ruff_cache .hypothesis
