"""cffi build script: compiles csrc/*.c into the extension pygrad._pygrad_c.

The cdef is the header itself (csrc/pygrad.h), one source of truth for the C
API, after the C preprocessor has expanded its op table (cffi reads no macros).
"""
import os
import shlex
import subprocess
import sysconfig
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
SOURCES = ["arena.c", "ops.c", "graph.c", "replay.c", "nn.c", "optim.c"]


def shared_flags() -> list:
    """csrc/cflags: the flags the C tests build with too."""
    lines = (CSRC / "cflags").read_text().splitlines()
    return [flag for line in lines if not line.startswith("#") for flag in line.split()]


def read_header() -> str:
    """csrc/pygrad.h preprocessed: macros expanded, comments and # lines gone."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    return subprocess.run([*cc, "-E", "-P", "-undef", "-nostdinc", "-x", "c",
                           str(CSRC / "pygrad.h")],
                          check=True, capture_output=True, text=True).stdout


ffibuilder = FFI()
ffibuilder.cdef(read_header())
ffibuilder.set_source(
    "pygrad._pygrad_c",
    '#include <stdint.h>\n#include "pygrad.h"\n',
    # Relative paths: setuptools wants them relative to setup.py.
    sources=[f"csrc/{name}" for name in SOURCES],
    # rebuild when these change
    depends=["csrc/pygrad.h", "csrc/arena.h", "csrc/ops.h", "csrc/cflags"],
    include_dirs=["csrc"],
    # -fvisibility=hidden: only the C API is exported (csrc/arena.h), so
    # internal calls bind directly, not through the PLT.
    extra_compile_args=["-O2", "-fvisibility=hidden", *shared_flags()],
    libraries=["m", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
