"""How a Value and its node live and die together.

A node lives in the C arena while something refers to it: a parent node, a
tape, or a Python Value.  This module is the Python half of that.

Plain Values.  A Value made by an op (or Value(x)) refers to nothing but its
node's handle, so it can be part of no reference cycle.  pygrad keeps every
such Value in one list, ``values``; a sweep now and then reads each one's
reference count from C and lets go of those that nothing else holds.  Because
no plain Value is in a cycle, that count is exact, and nothing has to run when
a Value dies: no finalizer, which is where Python would swallow a signal
handler's exception, and which would run before a finalizer of cyclic
garbage could resurrect the Value.  Values that survive a sweep go into ``table`` (weakly, by node
slot), which gives ``_prev`` the user's own objects back.

The C core keeps each handle it hands out in a nursery until the next sweep
says whether a Value kept it, so a handle lost between a C call's return and
its Value (to an exception a signal handler raised right there) is released
too.  Every few hundred handles it flags a call PG_PENDING: time to sweep.

Stateful Values.  Anything a user attaches to a Value (``label``, any
attribute, a custom op's ``_backward``) is the node's state: it is the
Value's ``__dict__``, shared by every Value of the node.  Such a Value may be
in cycles (a custom op's closure refers to ``out``), so its count says
nothing; it holds an ``_Anchor`` instead, a little object that takes its
place (and its reference) in ``values``.  The anchor refers to nothing, so
its count is exact: it dies when the Value is really freed, by the count or
by the cycle collector, and only then (a finalizer that resurrects the Value
keeps it).  While the node has parents or tapes, this module also holds the
state, so that it outlives the Value; sweeps let go of it once the node has
none, which makes a closure referring to ``out`` an ordinary cycle that the
collector frees.  A custom op's state holds its stateful children.
"""
import gc
import os
import sys
import threading
import weakref
from collections import deque
from functools import partial
from itertools import compress, count, islice, repeat
from operator import attrgetter, is_, is_not, methodcaller, ne, not_, rshift, setitem

from ._core import StaleValueError, error_for, ffi, lib

GEN_BITS = lib.PG_GEN_BITS
PENDING = -(1 << lib.PG_PENDING_SHIFT)
_LAST_ERROR = PENDING // 2  # results in (_LAST_ERROR, 0) are error codes

# plain Values: values[:_old] survived a sweep (values[:_tenured] two or more); the
# rest are young
values = []
keep = values.append  # how every new plain Value is kept (engine.py's hot path)
# Plain Values that nothing held at the last sweep, to be used again: a new
# Value made from one of these skips an allocation, a deallocation and the
# cycle collector's count.  engine.py takes one with `if free: free.pop()`,
# which no other thread can interleave on Python 3.11+, where the interpreter
# only switches threads at the end of a call or a backward jump; before 3.11
# it stays empty.
free = []
_RECYCLE = sys.version_info >= (3, 11) and not os.environ.get("PG_NORECYCLE")
_FREE_MAX = 4 * lib.PG_SWEEP_EVERY
_old = 0
# values[_tenured:_old] survived one sweep only.  Most of them are temporaries of
# whatever was running when the sweep came (a training step's inputs, scores,
# partial sums), which die soon after, each holding the graph under it: so
# every sweep looks at them once more, not only a full one.  Without that a
# training loop that rebuilds its graph every step keeps several steps' graphs
# alive between full sweeps, and the arena grows past where it keeps its memory.
_tenured = 0
_old_known = 0  # values[:_old_known] are in the table (register_young puts them there)
_mixed = False  # something other than a plain Value was put in `values` since the last sweep
_since_full = 0  # Values kept since the last full sweep
_clean = True  # the last sweep ran to its end
table = []  # slot -> weakref to a Value that survived a sweep (or is stateful), or None
_held_states = {}  # handle -> __dict__ of a stateful node that has parents or tapes
_held_after_drop = 0  # len(_held_states) after _drop_unneeded_states last looked
_lock = threading.RLock()
_handle = attrgetter("_h")
_SWEEP_YOUNG = lib.PG_SWEEP_EVERY
# What reading a Value's _h, or handing it to C, raises once a program
# overwrote it with something that is no int, or deleted it.
_TAMPERED = (AttributeError, TypeError, OverflowError)


def _reset_after_fork():
    global _lock
    _lock = threading.RLock()


os.register_at_fork(before=lambda: _lock.acquire(), after_in_parent=lambda: _lock.release(),
                    after_in_child=_reset_after_fork)


def _sweep_refcounts(batch):
    """sys.getrefcount of each Value in a sweep's batch, read at C speed."""
    return map(sys.getrefcount, batch)


def _refcount_of_the_unheld():
    """What _sweep_refcounts reports for a Value that nothing else holds."""
    values.append(object())
    try:
        return next(_sweep_refcounts(values[-1:]))
    finally:
        values.pop()


_UNHELD = _refcount_of_the_unheld()


# --- results of C calls ---------------------------------------------------------------

def settle(result, operands=(), fn=None, *args):
    """The handle (or status) behind a negative `result` of fn(*args), a C call
    that hands out handles (operands: the Values it was given).  For a
    PG_PENDING result, does the pending work first; for NodeLimitError, lets
    go of dead Values and calls fn again; for any other error code, raises."""
    if result == lib.PG_ERR_NOMEM and fn is not None:
        result = _retry_after_collecting(fn, args)
    if result >= 0:
        return result
    if result > _LAST_ERROR:
        raise error_for(result)
    for value in operands:
        if getattr(value, "_anchor", None) is not None:
            hold_state(value)
    sweep(full=False, blocking=False)
    return result - PENDING


# Sweeps a call at the node limit tries before it gives up: other threads can
# take the room one sweep made before this thread's call gets it.
_LIMIT_ATTEMPTS = 8


def _retry_after_collecting(fn, args):
    """Values that died must not count against the node limit: sweep (and,
    after the first try, collect cycles too), then call fn again."""
    result = lib.PG_ERR_NOMEM
    for attempt in range(_LIMIT_ATTEMPTS):
        if attempt:
            gc.collect()
        sweep(full=True)
        result = fn(*args)
        if result != lib.PG_ERR_NOMEM:
            break
    return result


# --- sweeps ------------------------------------------------------------------------------

def sweep(full=False, blocking=True):
    """Let go of the plain Values nothing but pygrad holds: the young ones
    (kept since the last sweep) and those that survived the last sweep only,
    or all of them (full; also once four times as many Values were kept since
    the last full sweep as there are old ones, so that looking at each costs
    O(1) per Value kept).  One thread at a time; a caller that may skip it
    passes blocking=False.

    Safe to interrupt anywhere: until `values` changes nothing has, and a
    sweep that did not finish makes the next one look at everything."""
    global _old, _old_known, _clean, _since_full, _tenured
    if not _lock.acquire(blocking):
        return
    try:
        settled = lib.pg_sweep_begin()
        _since_full += len(values) - _old
        full = full or not _clean or _since_full >= 4 * max(_SWEEP_YOUNG, _old)
        if full:
            _since_full = 0
        # Old Values hold references of their own: the dead ones are let go of
        # by name.  A dead young one holds a nursery entry, which goes without
        # naming it, as long as each young Value holds exactly one (else the
        # dead young are named too, each to take one entry of its handle).
        start, end = (0 if full else min(_tenured, _old)), len(values)
        old = _old - start  # how many of the batch are old
        batch = values[start:end]
        held = list(map(ne, _sweep_refcounts(batch), repeat(_UNHELD)))
        survivors = list(compress(batch, held))
        dead = list(compress(batch, map(not_, held))) if len(survivors) < len(batch) else []
        attributed = [(batch[i], held[i]) for i in _with_attributes(batch)]
        if old:  # the young survivors: their nursery entries become their own
            newcomers = list(compress(batch[old:], held[old:]))
        else:
            newcomers = survivors
        dead_old = list(compress(batch[:old], map(not_, held[:old]))) if old and dead else []
        if dead and (not _clean or settled != end - _old):
            dead_young = list(compress(batch[old:], map(not_, held[old:])))
        else:
            dead_young = []
        del batch, held
        old_survivors = len(survivors) - len(newcomers) if old else 0
        kept, tampered = _handles_for_c(newcomers)
        dropped, let_go = _handles_for_c(dead_young)[0], _handles_for_c(dead_old)[0]
        del dead_young, dead_old
        if tampered:  # they stay young: see _handles_for_c
            survivors = _without(survivors, tampered)
            old_survivors = 0  # all looked at again next time
        _keep_states_of(v for v, is_held in attributed if not is_held)
        n_survivors, n_kept = len(survivors), len(kept)
        n_dropped, n_let_go = len(dropped), len(let_go)
        _clean = False
        _old_known = min(_old_known, start)  # from start on they are reordered: looked at again
        # `values` loses the dead exactly when C releases them: all at once, so
        # that no signal handler's exception can land in between.  (Tampered
        # Values stay young: after the old ones.)
        _all_at_once(partial(setitem, values, slice(start, end), survivors + tampered),
                     partial(setitem, _globals, "_old", start + n_survivors),
                     # the old ones that survived again
                     partial(setitem, _globals, "_tenured", start + old_survivors),
                     partial(lib.pg_sweep_end, kept, n_kept, dropped, n_dropped),
                     # not in pg_sweep_end's dropped, where each would take a
                     # nursery entry of its handle: one lost on its way to a Value
                     partial(lib.pg_release_many, let_go, n_let_go),
                     partial(setitem, _globals, "_clean", True))
        for value, is_held in attributed:
            if is_held:
                try:
                    _make_stateful_from_sweep(value)
                except _TAMPERED + (StaleValueError,):
                    pass  # its _h was overwritten: it stays plain while it names no live node
        if _RECYCLE and dead and not attributed:
            _recycle(dead, mixed=full or _mixed or old)
        _drop_unneeded_states(full)
        if full:
            _fit_table()
    finally:
        _lock.release()


_globals = globals()
_call = methodcaller("__call__")


def _all_at_once(*calls):
    """Call each of `calls` (partials of C functions, which run no bytecode) in
    turn, with no bytecode in between: a signal handler runs before all of them
    or after all of them.  (Python 3.9 runs handlers between almost any two
    bytecodes; 3.10+ at calls and loops' ends.)"""
    deque(map(_call, calls), 0)


def _is_handle(h, end=None):
    """Whether h can be the handle of a live node: an int naming a slot in
    use (below `end`, the handle past the last such slot)."""
    if end is None:
        end = lib.pg_slots_in_use() << GEN_BITS
    return type(h) is int and 0 <= h < end


def _handles_for_c(batch):
    """(The handles of batch's Values as an int64_t array for C, the Values
    left out).  A program may have overwritten a Value's _h with anything, or
    deleted it; such a Value is left out, so that one tampered Value can make
    no sweep fail (and nothing be released again).  A young one left out stays
    young: if its nursery entry outlives this sweep (in flight), the next
    sweep still counts it as young's, and if not, the count no longer adds up
    and the next sweep names every dead Value.  (An int that names no live
    node C refuses; one that names another Value's is aliasing, whose first
    release wins.)"""
    try:
        return ffi.new("int64_t[]", list(map(_handle, batch))), []
    except _TAMPERED:
        pass
    handles, left_out = [], []
    for value in batch:
        h = getattr(value, "_h", None)
        if type(h) is int and -2**63 <= h < 2**63:
            handles.append(h)
        else:
            left_out.append(value)
    return ffi.new("int64_t[]", handles), left_out


def _without(batch, some):
    """batch without the Values in `some` (by identity)."""
    ids = set(map(id, some))
    return [v for v in batch if id(v) not in ids]


def _recycle(dead, mixed):
    """Keep dead plain Values for reuse, but those with weak references (a
    weakref to a dead Value must die with it), and anything else in `values`
    (anchors; a subclass's Value an interrupt kept from its anchor), which
    only a full sweep or one after such a thing was put there (`mixed`) meets."""
    global _mixed
    if len(free) + len(dead) > _FREE_MAX:
        dead = dead[:max(0, _FREE_MAX - len(free))]
    if mixed:
        dead = list(compress(dead, map(is_, map(type, dead), repeat(_value_class))))
    free.extend(compress(dead, map(not_, map(weakref.getweakrefcount, dead))))
    _mixed = False


def _with_attributes(batch):
    """Where in batch the Values with attributes (a __dict__) are.  One C call
    counts what they refer to (their type and handle, and the __dict__ when
    there is one); a closer look only when the count says so."""
    if not batch or len(gc.get_referents(*batch)) == 2 * len(batch):
        return []
    return [i for i, v in enumerate(batch) if len(gc.get_referents(v)) > 2]


def _keep_states_of(dying):
    """Plain Values with attributes that nothing holds any more: their
    attributes stay with their nodes, if the nodes live on (parents, tapes)."""
    for value in dying:
        h = getattr(value, "_h", None)  # a program may have overwritten it
        if _is_handle(h) and lib.pg_internal_refs(h) > 0 and lib.pg_set_stateful(h) >= 0:
            _held_states[h] = value.__dict__


def _remember(survivors):
    """Put (weak references to) the Values among `survivors` in the table,
    for _prev; not anchors, nor Values whose _h names no slot in use."""
    survivors = list(compress(survivors, map(is_not, map(type, survivors), repeat(_Anchor))))
    try:
        slots = list(map(rshift, map(_handle, survivors), repeat(GEN_BITS)))
        if slots and not (min(slots) >= 0 and max(slots) < lib.pg_slots_in_use()):
            raise ValueError
    except (ValueError,) + _TAMPERED:
        survivors = [v for v in survivors if _is_handle(getattr(v, "_h", None))]
        slots = [v._h >> GEN_BITS for v in survivors]
    if slots and max(slots) >= len(table):
        table.extend(repeat(None, max(max(slots) + 1, 2 * len(table)) - len(table)))
    deque(map(setitem, repeat(table), slots, map(weakref.ref, survivors)), 0)


def _drop_unneeded_states(full):
    """Stop holding the state of stateful nodes that have no parents or tapes
    left (or are gone): their Values alone hold it now, and a cycle through a
    custom op's closure is the collector's to free.  Soon, before the
    collector promotes such a cycle to an older generation: at every sweep
    while few states are held; else once their number doubled, or at a full
    sweep (which keeps the looking O(1) per state held)."""
    global _held_after_drop
    held = len(_held_states)
    if not full and _SWEEP_YOUNG < held < 2 * _held_after_drop:
        return
    for h in [h for h in _held_states if lib.pg_internal_refs(h) <= 0]:
        del _held_states[h]
    _held_after_drop = len(_held_states)


def _fit_table():
    """Cut the table down once the arena has shrunk far below it."""
    used = max(lib.pg_slots_in_use(), 1024)
    if len(table) > 4 * used:
        del table[2 * used:]


def live_nodes():
    """How many nodes the arena holds, after a full sweep."""
    sweep(full=True)
    return lib.pg_live_nodes()


# --- Values for handles ----------------------------------------------------------------------

_new = object.__new__


def plain(cls, h):
    """A new plain Value of class cls for handle h (fresh from the C core)."""
    value = free.pop() if free and cls is _value_class else _new(cls)
    value._h = h
    keep(value)
    return value


def value_for_child(parent, index):
    """The Value for the index-th child of handle `parent`: the user's own if
    one is alive, else a new one (the child's state comes along)."""
    h = lib.pg_child_retain(parent, index)
    if h < 0:
        h = settle(h)
    with _lock:
        existing = _registered(h)
        if existing is not None:
            lib.pg_release(h)  # the reference pg_child_retain took
            return existing
        state = _held_states.get(h)
        value = plain(_value_class, h)
        _remember([value])  # one Value per node, however often it is asked for
        if state is not None:
            object.__setattr__(value, "__dict__", state)
            make_stateful(value)
        return value


def register_young():
    """Sweep, and put every Value alive in the table (before a walk).  Sweeps
    leave that to here, so that a program that never asks for _prev never
    pays for the table."""
    global _old_known
    if len(values) > _old:
        sweep(full=False)
    with _lock:
        if _old_known < _old:
            _remember(values[_old_known:_old])
            _old_known = _old


def _registered(h):
    slot = h >> GEN_BITS
    entry = table[slot] if 0 <= slot < len(table) else None
    value = entry() if entry is not None else None
    if value is not None and getattr(value, "_h", None) == h:
        return value
    return None


# --- stateful Values --------------------------------------------------------------------------

class _Anchor:
    """A stateful Value's reference to its node, kept in `values` in the
    Value's place (and the reference a Value gives back when it stops being
    plain).  It refers to nothing, so the sweep reads its count exactly: it
    dies when its Value is really freed, after any finalizer that resurrects
    the Value has run (which a finalizer of its own would not wait for)."""

    __slots__ = ("_h",)

    def __init__(self, h):
        self._h = h


def make_stateful(value):
    """Make `value` (kept in `values` as a plain Value) stateful: an _Anchor
    takes its place in `values`, with its reference; the Value holds the
    anchor.  In that order: a Value interrupted in between holds its anchor
    and its place, which the sweep finishes (_make_stateful_from_sweep)."""
    with _lock:
        if getattr(value, "_anchor", None) is not None:
            return
        h = value._h
        refs = lib.pg_set_stateful(h)  # first: a bad handle changes nothing
        if refs < 0:
            raise error_for(refs)
        if refs > 0:  # before the anchor: a Value with one has its state held
            _held_states[h] = value.__dict__
        anchor = _Anchor(h)
        object.__setattr__(value, "_anchor", anchor)
        _remember([value])
        _replace_in_values(value, anchor)


def _make_stateful_from_sweep(value):
    """A live Value with attributes, in `values`: stateful from now on, or
    already (an interrupt stopped make_stateful before its anchor took its place)."""
    anchor = getattr(value, "_anchor", None)
    if anchor is not None:
        _replace_in_values(value, anchor)
    else:
        make_stateful(value)


def new_tape_ref():
    """An empty pg_tape_ref owned by a gc object: the tape it will hold is
    freed when the object goes, whatever interrupted its maker."""
    return ffi.gc(ffi.new("pg_tape_ref *"), lib.pg_tape_ref_clear)


def _replace_in_values(value, anchor):
    """Put `anchor` in `value`'s place in `values` (a young place, most likely),
    found by identity: list.index would call a subclass's __eq__, and raise."""
    global _mixed
    _mixed = True
    for first in (_old, 0):
        places = compress(count(first), map(is_, islice(values, first, None), repeat(value)))
        i = next(places, None)
        if i is not None:
            values[i] = anchor
            return


def hold_state(value):
    """The node of stateful `value` has (or is getting) a parent or a tape:
    hold its state, so that it outlives the Value."""
    with _lock:
        _held_states[value._h] = value.__dict__


def state_of(h):
    """The state dict of node h, or None (a plain node, or none known)."""
    value = _registered(h)
    if value is not None:
        return value.__dict__ if getattr(value, "_anchor", None) is not None else None
    return _held_states.get(h)


def release(value):
    """Give up `value`'s reference to its node now (re-initializing it): its
    anchor, or a new one in its place in `values`, gives it back at the next sweep."""
    with _lock:
        h = getattr(value, "_h", None)
        if getattr(value, "_anchor", None) is not None:
            object.__setattr__(value, "_anchor", None)
        _replace_in_values(value, _Anchor(h))
        if _is_handle(h) and _registered(h) is value:
            table[h >> GEN_BITS] = None


def keep_unusual(value):
    """Keep `value` (a subclass's Value, to be made stateful) in `values`:
    no sweep may take it for a plain Value to reuse."""
    global _mixed
    _mixed = True
    keep(value)


# Filled in by pygrad.engine.
_value_class = None


def bind(value_class):
    global _value_class
    _value_class = value_class
    lib.pg_python_layer(1)
