# Two commands a user needs: `make demo` and `make test`. Both create .venv and install on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
RUN := PATH="$(BIN):$$PATH" DVC_NO_ANALYTICS=1

.PHONY: setup browser demo test test-fast lint clean-demo

setup: $(VENV)/.installed .dvc/plots/offline.html

.dvc/plots/offline.html: $(VENV)/.installed  # lets `dvc plots show` render without internet
	$(BIN)/python -m aligned_forensics.common.offline_plots --out $@

browser:  ## optional, Debian as root: headless Chromium (~100 MB), for the test that draws every plot (else skipped)
	command -v chromium-headless-shell >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell; }

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: setup  ## the offline CPU demo: the whole pipeline with `dvc repro`
	$(RUN) dvc repro
	$(RUN) dvc metrics show

test: setup  ## the whole test suite (unit, stage and end-to-end `dvc repro`), offline
	$(RUN) HF_HUB_OFFLINE=1 python -m pytest --durations=25

test-fast: setup  ## everything but the end-to-end pipeline runs
	$(RUN) HF_HUB_OFFLINE=1 python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src stages tests bench
