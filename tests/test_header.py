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


_STRUCT_DEFINITION = r"\btypedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;"


def _structs():
    """{alias: ("struct tag", [(field type, field name)...])} for every
    `typedef struct tag { fields } alias;` (the structs Python makes itself,
    with ffi.new, and C reads and writes)."""
    found = {}
    for tag, body, alias in re.findall(_STRUCT_DEFINITION, _code(), flags=re.S):
        fields = []
        for member in body.split(";"):
            member = " ".join(member.split())
            if not member:
                continue
            m = re.fullmatch(r"([\w\s\*]+?)\s*\b(\w+)", member)
            assert m, f"cannot parse struct {tag}'s member {member!r}"
            fields.append((" ".join(m.group(1).replace("*", " * ").split()), m.group(2)))
        found[alias] = (f"struct {tag}", fields)
    return found


def _resolve(ctype, typedefs):
    """A C type (normalized) with the header's struct typedefs spelled out."""
    return " ".join(typedefs.get(word, word) for word in ctype.split())


def _declarations():
    """{name: (return type, [parameter types])} for every pg_ function declared."""
    code = re.sub(r"enum\s+\w*\s*\{.*?\}\s*;", " ", _code(), flags=re.S)
    code = re.sub(_STRUCT_DEFINITION, " ", code, flags=re.S)  # their fields hold ';'
    code = re.sub(r"#[^\n]*", " ", code)
    typedefs = {**_typedefs(), **{alias: tag for alias, (tag, _) in _structs().items()}}
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
STRUCTS = _structs()


def test_parser_finds_the_api():
    # guards the tests below against a parser that silently finds nothing
    assert len(DECLARED) >= 30
    for name in ("pg_leaf", "pg_add", "pg_backward", "pg_release", "pg_live_nodes"):
        assert name in DECLARED
    assert ENUMS["PG_OK"] == 0 and "PG_OP_LEAF" in ENUMS
    assert TYPEDEFS["pg_grad_off"] == "struct pg_grad_off"  # opaque
    assert STRUCTS["pg_tape_ref"] == ("struct pg_tape_ref",  # defined
                                      [("int64_t", "recorded"), ("int64_t", "tape")])
    assert "pg_tape_ref" not in TYPEDEFS and "pg_owned" not in {**TYPEDEFS, **STRUCTS}
    assert DECLARED["pg_tape_record_into"] == ("int64_t", ["struct pg_tape_ref *", "int64_t"])
    assert DECLARED["pg_tape_ref_clear"] == ("void", ["struct pg_tape_ref *"])
    for gone in ("pg_owned_new", "pg_owned_release", "pg_tape_ref_free"):
        assert gone not in DECLARED


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


@pytest.mark.parametrize("alias", sorted(STRUCTS))
def test_defined_struct_has_the_header_fields_on_lib(alias):
    # Python makes these (ffi.new zeroes them) and C reads and writes them:
    # cffi's layout must be the header's, field for field, with nothing more
    tag, fields = STRUCTS[alias]
    ctype = ffi.typeof(alias)
    assert ctype.kind == "struct" and ctype.cname == tag
    assert [name for name, _ in ctype.fields] == [name for _, name in fields]
    assert [_norm(f.type.cname) for _, f in ctype.fields] == [t for t, _ in fields]
    end = 0
    for _, field in ctype.fields:
        assert field.offset >= end and field.bitsize == -1
        end = field.offset + ffi.sizeof(field.type)
    assert ffi.sizeof(alias) >= end and ffi.sizeof(alias) == ffi.sizeof(tag)
    made = ffi.new(f"{alias} *")
    assert all(getattr(made, name) == 0 for _, name in fields)


@pytest.mark.parametrize("alias", sorted(TYPEDEFS) + sorted(STRUCTS))
def test_typedef_struct_is_used_by_the_api(alias):
    tag = TYPEDEFS[alias] if alias in TYPEDEFS else STRUCTS[alias][0]
    uses = [name for name, (result, params) in DECLARED.items()
            if f"{tag} *" in [result] + params]
    assert uses, f"{alias} is declared in {HEADER.name} but no function takes or returns one"


def test_ffi_has_exactly_the_header_types():
    # no typedef or struct typed into a cdef by hand, nor one left behind
    # (pg_owned is gone)
    typedefs, structs, unions = ffi.list_types()
    assert sorted(typedefs) == sorted(set(TYPEDEFS) | set(STRUCTS))
    assert sorted(structs) == sorted(tag.split()[1] for tag in
                                     list(TYPEDEFS.values()) + [t for t, _ in STRUCTS.values()])
    assert unions == []
    for gone in ("pg_owned", "struct pg_owned"):
        with pytest.raises(ffi.error):
            ffi.typeof(gone)


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
