"""Where the time of one `a * b` goes: pygrad's op cost, taken apart.

    python bench/op_cost.py

Each line times one layer of what `a * b` does, in this process, so that the
floor set by Python and cffi is visible next to what pygrad adds.  (The C work
itself, pg_mul + pg_release, is measured by tests/c's callers: it is ~40 ns.)
"""
import timeit

import micrograd.engine

import pygrad
from pygrad._core import lib

NUMBER = 200_000


def best(fn):
    return min(timeit.repeat(fn, number=NUMBER, repeat=7)) / NUMBER


class Plain:
    __slots__ = ("_h",)

    def __mul__(self, other):
        return self


def main():
    a, b = pygrad.Value(2.0), pygrad.Value(3.0)
    ma, mb = micrograd.engine.Value(2.0), micrograd.engine.Value(3.0)
    plain = Plain()
    ha, hb = a._h, b._h
    mul, release, live = lib.pg_mul, lib.pg_release, lib.pg_live_nodes
    new = object.__new__
    rows = [
        ("a Python lambda call (the timing loop itself)", best(lambda: None)),
        ("a no-op __mul__ on a slotted class", best(lambda: plain * plain)),
        ("object.__new__ of a slotted class, then its dealloc", best(lambda: new(Plain))),
        ("a 0-argument cffi call (pg_live_nodes)", best(lambda: live())),
        ("a 2-argument cffi call making a node, and its release",
         best(lambda: release(mul(ha, hb)))),
        ("pygrad: a * b", best(lambda: a * b)),
        ("micrograd: a * b", best(lambda: ma * mb)),
    ]
    width = max(len(name) for name, _ in rows)
    print("`python bench/op_cost.py`: the cost of one op, layer by layer\n")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1e9:7.0f} ns")


if __name__ == "__main__":
    main()
