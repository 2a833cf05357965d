# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-all lint bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m neuralrender demo

test: setup
	$(PY) -m pytest -q tests

test-all: setup
	NR_SLOW=1 $(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/raster.py

clean:
	rm -rf runs build *.egg-info
