# The two commands of the Quick start: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: run test lint install tls clean doctor bench infra-tools openapi fuzz

# One line per install step: what it does, then the seconds it took (a failing step stops make).
STEP = @bash -c 'printf "install: %s ... " "$$1"; s=$$(date +%s%N); shift; "$$@" || { e=$$?; echo failed; exit $$e; }; \
	ms=$$(( ($$(date +%s%N) - s) / 1000000 )); printf "done in %d.%d s\n" $$((ms / 1000)) $$((ms % 1000 / 100))' step

install: $(STAMP) $(NODE_STAMP) tls

$(STAMP): requirements.txt requirements-dev.txt
	$(STEP) "Python virtualenv ($(VENV))" sh -c 'test -x $(PY) || $(PYTHON) -m venv $(VENV)'
	$(STEP) "Python packages (requirements-dev.txt; about a minute the first time)" \
		$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	$(STEP) "Azurite (npm ci)" npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## infra-tools: checkov in its own virtualenv (pinned in requirements-infra.txt) for tests/infra.
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed-stamp

infra-tools: $(INFRA_STAMP)

$(INFRA_STAMP): requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-infra.txt
	@touch $@

tls: $(STAMP)
	$(STEP) "local certificate authority (.local/tls)" sh -c '$(PY) -m local.tls >/dev/null'

## make run: start Azurite, the Entra simulator, the vault emulator and the function host; Ctrl-C stops all.
## The rotation and federation timers stay off unless TIMERS=1 (make run TIMERS=1); INSTANCES=N runs N hosts.
run: install
	$(PY) -m local.stack$(if $(TIMERS), --timers)$(if $(INSTANCES), --instances $(INSTANCES))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## make test: install, lint, then every test (servers are started and stopped by fixtures).
test: install lint infra-tools
	$(VENV)/bin/pytest

## make bench: every benchmark; each prints one summary line with its ratio to the limit that binds it.
bench: install
	$(PY) -m bench.coldstart
	$(PY) -m bench.gateway
	$(PY) -m bench.entra
	$(PY) -m bench.vault
	$(PY) -m bench.rotation_faults --rotations 1000
	$(PY) -m bench.rotation_faults_stack --rotations 1000
	$(PY) -m bench.rotation --users 2000
	$(PY) -m bench.sync --users 20000,100000 --depth 3
	$(PY) -m bench.passkeys
	$(PY) -m bench.events
	$(PY) -m bench.export --users 10000 --groups 200

## make doctor: while `make run` is up, test the demo connection and print the permission report.
doctor: install
	$(PY) -m shared.cli doctor --connection demo

## make openapi: regenerate docs/openapi.json from the functions' routes and models (a test fails when it drifts).
openapi: $(STAMP)
	$(PY) -m functions.openapi > docs/openapi.json

## make fuzz: the schema-driven fuzzing that make test runs (tests/e2e/test_api_fuzz.py), ten times longer.
fuzz: install
	FUZZ_EXAMPLES=500 $(VENV)/bin/pytest -q -o timeout=3600 tests/e2e/test_api_fuzz.py

clean:
	rm -rf .local .mypy_cache .ruff_cache .pytest_cache
