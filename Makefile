# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Exact versions with hashes (pyproject.toml keeps the ranges). requirements.lock: what the daemon runs on
# (the production install); requirements-dev.lock: the same versions plus the tools of `make test`.
# Both also pin setuptools, the build backend, so installing this package fetches nothing unlocked.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
# One lock for every Python >= 3.11 (--universal writes markers where a version differs), any OS/CPU.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
              --quiet $(if $(UPGRADE),--upgrade)
BUILD_REQUIRES := setuptools>=68

.PHONY: run test system-deps lint typecheck imports unit bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A change of the lock (or of pyproject.toml) reinstalls. `pip check` fails when pyproject.toml asks
# for a package the lock lacks: run `make lock` then.
$(STAMP): $(DEV_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/wadispatch run --config conf/dispatcher.toml

test: $(STAMP) system-deps lint typecheck imports unit

# Programs some tests run for real: an etcd cluster (ownership across hosts) and a headless chromium
# (the operator console). Installed from Debian where apt is there and we are root (CI); anywhere else
# those tests skip and say why. Never needed by `make run`.
SYSTEM_PACKAGES := etcd-server chromium chromium-driver
system-deps:
	@command -v dpkg >/dev/null || { echo "system-deps: no dpkg here; the etcd and browser tests will skip"; exit 0; }; \
	missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -n "$$missing" ] || exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "system-deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq $$missing >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; } \
	    || echo "system-deps: could not install$$missing; the tests that need them will skip"; \
	else echo "system-deps: missing$$missing (needs root and apt); the tests that need them will skip"; fi

lint: $(STAMP)
	$(BIN)/ruff check dispatcher actors tests bench
	$(BIN)/ruff format --check dispatcher actors tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The floors: a module imports only its own floor or below (contracts in pyproject.toml).
imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest

# Refresh the locks after editing pyproject.toml's dependencies: pins that still fit are kept.
# `make lock UPGRADE=1` moves every pin to the newest release its range allows.
# The dev lock is resolved first; the runtime lock is constrained to it, so both pin the same versions.
lock: $(STAMP)
	printf '%s\n' '$(BUILD_REQUIRES)' | $(BIN)/uv pip compile pyproject.toml - --extra dev $(LOCK_FLAGS) -o $(DEV_LOCK)
	printf '%s\n' '$(BUILD_REQUIRES)' | $(BIN)/uv pip compile pyproject.toml - -c $(DEV_LOCK) $(LOCK_FLAGS) -o $(LOCK)

clean:
	rm -rf $(VENV) var
