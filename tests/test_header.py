"""csrc/pygrad.h is the single source of truth for the C API: everything it
declares must be reachable from Python as pygrad._core.lib, with the same
signature and the same constant values."""
import pathlib
import re

import pytest

from pygrad._core import ffi, lib

HEADER = pathlib.Path(__file__).resolve().parent.parent / "csrc" / "pygrad.h"


def _code():
    """The header without comments."""
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _typedefs():
    """{alias: "struct tag"} for every `typedef struct tag alias;` (the opaque
    types the API hands out pointers to: cffi names them by their struct)."""
    return dict((alias, f"struct {tag}") for tag, alias in
                re.findall(r"\btypedef\s+struct\s+(\w+)\s+(\w+)\s*;", _code()))


def _resolve(ctype, typedefs):
    """A C type (normalized) with the header's struct typedefs spelled out."""
    return " ".join(typedefs.get(word, word) for word in ctype.split())


def _declarations():
    """{name: (return type, [parameter types])} for every pg_ function declared."""
    code = re.sub(r"enum\s+\w*\s*\{.*?\}\s*;", " ", _code(), flags=re.S)
    code = re.sub(r"#[^\n]*", " ", code)
    typedefs = _typedefs()
    found = {}
    for statement in code.split(";"):
        statement = " ".join(statement.split())
        m = re.fullmatch(r"(?:extern )?([\w\s\*]+?)\s*\b(pg_\w+)\s*\((.*)\)", statement)
        if not m:
            continue
        result, name, params = m.groups()
        types = []
        if params.strip() not in ("", "void"):
            for p in params.split(","):
                p = re.sub(r"\bconst\b", " ", p)
                p = re.sub(r"\b\w+\s*$", "", p.strip())  # drop the parameter name
                p = re.sub(r"\s*\[\s*\]$", " *", p)      # int64_t x[] is a pointer
                types.append(_resolve(" ".join(p.replace("*", " * ").split()), typedefs))
        found[name] = (_resolve(" ".join(result.replace("*", " * ").split()), typedefs), types)
    return found


def _enum_constants():
    """{name: value} for every enumerator, counting up as C does."""
    constants = {}
    for body in re.findall(r"enum\s+\w*\s*\{(.*?)\}", _code(), flags=re.S):
        nxt = 0
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, value = (x.strip() for x in item.partition("="))
            nxt = int(value, 0) if value else nxt
            constants[name] = nxt
            nxt += 1
    return constants


def _defines():
    return {m.group(1): int(m.group(2), 0)
            for m in re.finditer(r"^\s*#define\s+(\w+)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\b",
                                 _code(), flags=re.M)}


DECLARED = _declarations()
ENUMS = _enum_constants()
TYPEDEFS = _typedefs()


def test_parser_finds_the_api():
    # guards the tests below against a parser that silently finds nothing
    assert len(DECLARED) >= 30
    for name in ("pg_leaf", "pg_add", "pg_backward", "pg_release", "pg_live_nodes"):
        assert name in DECLARED
    assert ENUMS["PG_OK"] == 0 and "PG_OP_LEAF" in ENUMS
    for alias in ("pg_grad_off", "pg_owned", "pg_tape_ref"):
        assert TYPEDEFS[alias] == f"struct {alias}"


@pytest.mark.parametrize("alias", sorted(TYPEDEFS))
def test_typedef_struct_is_opaque_on_lib(alias):
    # the header only names these structs: Python can hold pointers to them
    # (gc objects, tokens) but can neither make one nor look inside one
    ctype = ffi.typeof(alias)
    assert ctype.kind == "struct" and ctype.cname == TYPEDEFS[alias]
    with pytest.raises(ffi.error):
        ffi.sizeof(alias)
    with pytest.raises(TypeError):
        ffi.new(f"{alias} *")


@pytest.mark.parametrize("alias", sorted(TYPEDEFS))
def test_typedef_struct_is_used_by_the_api(alias):
    uses = [name for name, (result, params) in DECLARED.items()
            if f"{TYPEDEFS[alias]} *" in [result] + params]
    assert uses, f"{alias} is declared in {HEADER.name} but no function takes or returns one"


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_declared_function_is_on_lib(name):
    assert hasattr(lib, name), f"{name} is declared in {HEADER.name} but not built"
    assert callable(getattr(lib, name))


def _norm(cname):
    return " ".join(cname.replace("*", " * ").split())


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_declared_function_has_the_header_signature(name):
    result, params = DECLARED[name]
    ctype = ffi.typeof(getattr(lib, name))
    assert _norm(ctype.result.cname) == result
    assert [_norm(a.cname) for a in ctype.args] == params


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_constant_is_on_lib_with_the_header_value(name):
    assert hasattr(lib, name), f"{name} is declared in {HEADER.name} but not on lib"
    assert getattr(lib, name) == ENUMS[name]


@pytest.mark.parametrize("name", sorted(_defines()))
def test_define_constant_is_on_lib_with_the_header_value(name):
    assert getattr(lib, name) == _defines()[name]


def test_lib_has_no_pg_function_the_header_does_not_declare():
    # the other direction: nothing typed into a cdef by hand besides the header
    extra = [n for n in dir(lib) if n.startswith("pg_") and n not in DECLARED]
    assert extra == []


def test_enum_values_are_distinct_within_each_enum():
    for body in re.findall(r"enum\s+\w*\s*\{(.*?)\}", _code(), flags=re.S):
        names = [i.partition("=")[0].strip() for i in body.split(",") if i.strip()]
        values = [ENUMS[n] for n in names]
        assert len(set(values)) == len(values)


def test_error_codes_are_negative_and_every_one_maps_to_an_exception():
    from pygrad._core import error_for
    errors = [n for n in ENUMS if n.startswith("PG_ERR_")]
    assert errors
    for name in errors:
        assert ENUMS[name] < 0
        assert isinstance(error_for(getattr(lib, name)), Exception)
