# The two commands of the README:
#   make demo   set everything up, train the demo, show the speed-up
#   make test   set everything up, run every test (C under sanitizers, then Python)
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check
CC ?= gcc
CSRC = $(wildcard csrc/*.c)
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CTEST_FLAGS = -std=c11 -g -O1 -Wall -Wextra -Werror -ffp-contract=off -DPG_DEBUG $(SANITIZE)

.PHONY: demo test install test-deps demo-deps system-deps ctest pytest bench clean

demo: demo-deps install
	$(PYTHON) examples/moons.py
	$(PYTHON) bench/bench.py --quick

test: test-deps install ctest pytest

install:
	$(PIP) .

# torch 2.13.0 is the CPU build kept on these machines; tests skip without it.
test-deps: system-deps
	$(PIP) pytest hypothesis numpy micrograd==0.1.0 graphviz matplotlib tqdm
	$(PIP) torch==2.13.0 || echo "torch not installed: its comparisons will be skipped"

demo-deps: system-deps
	$(PIP) micrograd==0.1.0 matplotlib tqdm numpy graphviz

# graphviz's `dot` renders graph pictures; valgrind runs the memcheck target.
system-deps:
	@command -v dot >/dev/null && command -v valgrind >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz valgrind)

build/ctest/%: tests/c/%.c $(CSRC) csrc/pygrad.h csrc/arena.h
	@mkdir -p build/ctest
	$(CC) $(CTEST_FLAGS) -Icsrc $< $(CSRC) -lm -lpthread -o $@

ctest: build/ctest/test_arena
	./build/ctest/test_arena

# From tests/, so that `import pygrad` finds the installed package, not ./pygrad.
pytest:
	cd tests && $(PYTHON) -m pytest -q

bench: install
	$(PYTHON) bench/bench.py

clean:
	rm -rf build dist *.egg-info
