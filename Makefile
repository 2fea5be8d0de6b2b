# The two commands of the README:
#   make demo   set everything up, train the demo, show the speed-up
#   make test   set everything up, run every test (C under sanitizers, then Python)
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

.PHONY: demo test install test-deps demo-deps system-deps ctest pytest valgrind valgrind-python \
	asan-python bench clean

demo: demo-deps install
	$(PYTHON) examples/moons.py
	$(PYTHON) bench/bench.py --quick

test: test-deps install ctest pytest valgrind valgrind-python asan-python

install:
	$(PIP) .

# torch 2.13.0 is the CPU build kept on these machines; tests skip without it.
test-deps: system-deps
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

# From tests/, so that `import pygrad` finds the installed package, not ./pygrad.
pytest:
	cd tests && $(PYTHON) -m pytest -q

bench: install
	$(PYTHON) bench/bench.py

clean:
	rm -rf build dist *.egg-info
