"""csrc/pygrad.h is the C API, and the op table in it the one list of ops.

cffi's cdef is the header itself (csrc/build.py), so lib cannot disagree with
it; what can go wrong is the built library exporting more or less than the
header declares, an error code without an exception, and an op table row
whose parts do not line up.
"""
import pathlib
import shutil
import subprocess

import pytest

import pygrad._pygrad_c
from pygrad import Value
from pygrad._core import error_for, ffi, lib

from support import unary_ops


def exported_symbols(library):
    """The defined dynamic symbols of a shared library, by name."""
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_the_library_exports_the_header_functions_and_nothing_else():
    # -fvisibility=hidden: internal functions bind directly instead of
    # through the PLT, and no internal name leaks to other libraries
    functions = {name for name in dir(lib) if name.startswith("pg_")}
    assert len(functions) >= 60 and "pg_op_name" in functions
    exported = exported_symbols(pathlib.Path(pygrad._pygrad_c.__file__))
    assert exported - {"PyInit__pygrad_c"} == functions


def test_every_error_code_maps_to_an_exception():
    errors = {name: value for name, value in ffi.typeof("enum pg_status").relements.items()
              if name.startswith("PG_ERR_")}
    assert len(errors) >= 9
    for name, value in errors.items():
        assert value < 0, name
        assert isinstance(error_for(value), Exception), name


def test_the_op_table_names_every_tag():
    tags = ffi.typeof("enum pg_op").relements
    assert tags["PG_OP_FREE"] == 0 and tags["PG_OP_COUNT"] == len(tags) - 1
    names = {tag: ffi.string(lib.pg_op_name(value)).decode()
             for tag, value in tags.items() if tag != "PG_OP_COUNT"}
    assert names["PG_OP_ADD"] == "+" and names["PG_OP_RELU"] == "ReLU"  # micrograd's
    assert lib.pg_op_name(lib.PG_OP_COUNT) == ffi.NULL and lib.pg_op_name(-1) == ffi.NULL


@pytest.mark.parametrize("name", unary_ops())
def test_a_unary_op_is_a_tag_a_c_function_and_a_value_method(name):
    tag = getattr(lib, f"PG_OP_{name.upper()}")
    y = getattr(Value(0.5), name)()
    assert lib.pg_op(y._h) == tag
    assert y._op == ffi.string(lib.pg_op_name(tag)).decode()
    (x,) = y._prev
    assert x.data == 0.5


def test_the_unary_ops_are_the_table_s():
    assert unary_ops()[:5] == ["relu", "tanh", "exp", "log", "sigmoid"]
