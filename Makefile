# The two commands of the README:
#   make demo   set everything up, train the demo, show the speed-up
#   make test   set everything up, run every test (C under sanitizers, then Python)
# and the one a developer runs after every change:
#   make check  the fast tier: the C tests under ASan/UBSan, the Python tests not
#               marked slow (no scale, endurance, stress, fork/signal storms, memcheck)
# and `make lint` (ruff, mypy, stubtest), which `make test` runs too.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check
CC ?= gcc
CSRC = $(wildcard csrc/*.c)
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SHARED_FLAGS := $(shell grep -v '^\#' csrc/cflags)  # the extension's too (csrc/build.py)
PLAIN_FLAGS = $(SHARED_FLAGS) -g -O1 -Werror -DPG_DEBUG
CTEST_FLAGS = $(PLAIN_FLAGS) $(SANITIZE)
# valgrind and ASan do not mix: valgrind runs the C tests built PLAIN, without sanitizers.
VALGRIND = valgrind --quiet --error-exitcode=1 --leak-check=full
PYTHON_BIN = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
LIBASAN = $(shell $(CC) -print-file-name=libasan.so)
ASAN_TESTS = test_boundary.py test_engine.py test_replay.py test_optim.py test_nn.py test_thread_stress.py

.PHONY: demo test check pytest-fast install test-deps demo-deps system-deps ctest pytest valgrind valgrind-python \
	asan-python sdist-check versions other-versions bench clean lint lint-deps

demo: demo-deps install
	$(PYTHON) examples/moons.py
	$(PYTHON) bench/bench.py --quick

# lint and sdist-check come early: they fail fast. The full tier runs on this Python; the
# fast tier then runs on every other CPython from 3.9 to 3.13 present (versions), and
# the run closes on its one line per version.
test: test-deps install lint sdist-check ctest pytest valgrind valgrind-python asan-python \
	other-versions

check: test-deps install ctest pytest-fast

# pip builds in ./build, and setuptools copies the package into build/lib.* without
# emptying it first: a module deleted from the tree (pygrad/demo.py) would ship again.
install:
	rm -rf build/lib.* build/bdist.*
	$(PIP) .

# asan-python builds without isolation, so the build's own requirements come first
# (setuptools>=77 reads pyproject's SPDX license). torch 2.13.0 is the CPU build kept
# on these machines; tests skip without it.
test-deps: system-deps lint-deps
	$(PIP) "setuptools>=77" wheel cffi
	$(PIP) pytest hypothesis numpy micrograd==0.1.0 graphviz matplotlib tqdm scikit-learn
	$(PIP) torch==2.13.0 || echo "torch not installed: its comparisons will be skipped"

demo-deps: system-deps
	$(PIP) micrograd==0.1.0 matplotlib tqdm numpy graphviz scikit-learn

# graphviz's `dot` renders graph pictures; valgrind runs the memcheck target.
system-deps:
	@command -v dot >/dev/null && command -v valgrind >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz valgrind)

build/ctest/%: tests/c/%.c $(CSRC) csrc/pygrad.h csrc/arena.h csrc/ops.h
	@mkdir -p build/ctest
	$(CC) $(CTEST_FLAGS) -Icsrc $< $(CSRC) -lm -lpthread -o $@

ctest: build/ctest/test_arena
	./build/ctest/test_arena

build/ctest/%_plain: tests/c/%.c $(CSRC) csrc/pygrad.h csrc/arena.h csrc/ops.h
	@mkdir -p build/ctest
	$(CC) $(PLAIN_FLAGS) -Icsrc $< $(CSRC) -lm -lpthread -o $@

# The C tests under memcheck (PG_TEST_QUICK: all but the 10,000,000-deep chain,
# which ctest runs under ASan and which passes memcheck too, in 26 s more).
valgrind: system-deps build/ctest/test_arena_plain
	PG_TEST_QUICK=1 $(VALGRIND) --errors-for-leak-kinds=definite,indirect ./build/ctest/test_arena_plain

# A tour of pygrad in Python under memcheck; CPython's and cffi's own noise is
# suppressed in tests/valgrind-python.supp, nothing of pygrad's is.
valgrind-python: system-deps install
	cd tests && PYTHONMALLOC=malloc $(VALGRIND) --show-leak-kinds=definite --errors-for-leak-kinds=definite \
	  --suppressions=valgrind-python.supp $(PYTHON_BIN) valgrind_workload.py

# The extension built with ASan/UBSan from a fresh copy of the sources (no object
# file shared with `make install`), and Python tests run against it.
asan-python: test-deps
	rm -rf build/asan && mkdir -p build/asan/src
	cp -r setup.py pyproject.toml README.md csrc pygrad build/asan/src/
	cd build/asan/src && CFLAGS="$(SANITIZE) -g" LDFLAGS="-fsanitize=address,undefined" \
	  $(PIP) --no-deps --no-build-isolation --target ../site .
	cd tests && LD_PRELOAD=$(LIBASAN) ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=../build/asan/site \
	  $(PYTHON) -m pytest -q $(ASAN_TESTS)

# Pinned: a new release of either can add a rule or an error and fail CI on unchanged
# code. mypy 2.x itself needs Python 3.10 or newer (pygrad needs 3.9).
LINT_DEPS = mypy==2.4.1 ruff==0.17.6
lint-deps:
	$(PIP) $(LINT_DEPS)

# ruff over the tree (its rules: pyproject.toml); the README's examples, typed, under
# `mypy --strict`; and stubtest: the stubs (pygrad/*.pyi) against the installed
# runtime, less tests/stubtest_allowlist.txt. mypy and stubtest run from tests/ so that
# they read the installed package (its py.typed and stubs), not ./pygrad. `ruff format`
# is not checked: it would rewrite 48 of the 50 Python files and the README's code.
lint: lint-deps install
	$(PYTHON) -m ruff check .
	cd tests && $(PYTHON) -m mypy --strict typing_usage.py
	cd tests && $(PYTHON) -m mypy.stubtest --mypy-config-file ../pyproject.toml \
	  --allowlist stubtest_allowlist.txt pygrad

# From tests/, so that `import pygrad` finds the installed package, not ./pygrad.
pytest:
	cd tests && $(PYTHON) -m pytest -q

pytest-fast:
	cd tests && $(PYTHON) -m pytest -q -m "not slow"

# The sdist as a user gets it: built by `python -m build --sdist` (its file list held
# to the source tree's by tests/sdist_contents.py), installed into a new virtual
# environment without the system's packages (pip compiles the C from the tarball; cffi
# is all it brings along) and smoke-tested there. A stale pygrad.egg-info would feed
# its old file list into the sdist, so it goes first.
SDIST_DIR ?= build/sdist-check
sdist-check:
	rm -rf $(SDIST_DIR) pygrad.egg-info && mkdir -p $(SDIST_DIR)
	$(PIP) build
	$(PYTHON) -m build --sdist --outdir $(SDIST_DIR) . >$(SDIST_DIR)/build.log 2>&1 || \
	  (cat $(SDIST_DIR)/build.log; exit 1)
	$(PYTHON) tests/sdist_contents.py $(SDIST_DIR)/pygrad-*.tar.gz
	$(PYTHON) -m venv $(SDIST_DIR)/venv
	$(SDIST_DIR)/venv/bin/python -m pip install --quiet --disable-pip-version-check $(SDIST_DIR)/pygrad-*.tar.gz
	cd $(SDIST_DIR) && venv/bin/python -I $(CURDIR)/tests/sdist_smoke.py

# The Python tests on each CPython from 3.9 to 3.13 that is present (pyenv's), each in
# a new venv with pygrad built by that interpreter; one line per version, logs in
# VERSIONS_DIR. Optional: PY_VERSIONS="3.9 3.13"; VERSIONS_TESTS, pytest's arguments
# from tests/ (default: the fast tier, -m "not slow").
VERSIONS_DIR ?= build/versions
versions: system-deps
	$(PYTHON) tests/python_versions.py --dir $(VERSIONS_DIR) $(if $(PY_VERSIONS),--versions $(PY_VERSIONS)) \
	  $(if $(VERSIONS_TESTS),--pytest-args "$(VERSIONS_TESTS)")

# make test's: the fast tier on every version but $(PYTHON)'s, which ran the full tier.
other-versions: system-deps
	$(PYTHON) tests/python_versions.py --dir $(VERSIONS_DIR) --except-running

bench: install
	$(PYTHON) bench/bench.py

clean:
	rm -rf build dist *.egg-info
