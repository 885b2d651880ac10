# The two set-up commands of the README:
#   make run    install everything, run the tour on the default local cloud, then open the shell
#   make test   install everything and run every test (fast ones and end-to-end ones)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast system install bench

system:
	bash scripts/install-system-packages.sh

# A regular (not editable) install: setuptools' editable modes print a warning
# box on every install.  Run from the source tree, Python imports cm from it anyway.
$(BIN)/cm: pyproject.toml
	python3 -m venv $(VENV)
	@echo "installing cm and its Python packages into $(VENV) (libvirt-python compiles: about a minute)"
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '.[test]'
	touch $@

install: system $(BIN)/cm

run: install
	$(BIN)/cm --echo defaults/tour.cm
	$(BIN)/cm

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

bench: install
	$(BIN)/python benchmarks/run.py
