"""cffi build script: compiles csrc/*.c into the extension pygrad._pygrad_c.

The cdef is the header itself (csrc/pygrad.h): one source of truth for the C API.
"""
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
SOURCES = ["arena.c", "ops.c", "graph.c", "nn.c", "optim.c"]


def read_header() -> str:
    return (CSRC / "pygrad.h").read_text()


ffibuilder = FFI()
ffibuilder.cdef(read_header())
ffibuilder.set_source(
    "pygrad._pygrad_c",
    '#include <stdint.h>\n#include "pygrad.h"\n',
    # Relative paths: setuptools wants them relative to setup.py.
    sources=[f"csrc/{name}" for name in SOURCES],
    depends=["csrc/pygrad.h", "csrc/arena.h"],  # rebuild when a header changes
    include_dirs=["csrc"],
    extra_compile_args=["-O2", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-Wall",
                        "-Wextra"],
    libraries=["m", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
