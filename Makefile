# The two commands: `make study` (whole study, default profile -> outputs/default/report.html)
# and `make test`. Both create .venv on first use; later runs only re-install when pyproject.toml changes.
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= default
# The shared real-data subsets beside the checkout, unless the user points elsewhere.
HISTOLEAN_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export HISTOLEAN_DATA

.PHONY: study test test-fast lint smoke lab report env clean-outputs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, so no other package picks a different build: on this study's CPU machines it
	# is the local CPU wheel; from PyPI on Linux it is the CUDA build, which a GPU machine wants.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name histolean --display-name "Python (histolean)" >/dev/null
	@touch $(STAMP)

env: $(STAMP)

study: $(STAMP)
	$(BIN)/histolean run --profile $(PROFILE)

smoke: $(STAMP)
	$(BIN)/histolean run --profile smoke

report: $(STAMP)
	$(BIN)/histolean report --profile $(PROFILE)

# the linter first (seconds), then every test
test: lint
	$(BIN)/python -m pytest

# ruff with the rules in pyproject.toml ([tool.ruff]), over the library, tests, peer scripts and notebooks
lint: $(STAMP)
	$(BIN)/ruff check lib tests benchmarks notebooks

# the unit tier only (no notebook runs): a few minutes
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean-outputs:
	rm -rf outputs/$(PROFILE)
