"""The only module that touches the C extension: ``lib``, ``ffi`` and the one
place where C status codes become Python exceptions."""
import os

from ._pygrad_c import ffi, lib

__all__ = ["ffi", "lib", "check", "error_for", "set_node_limit", "PygradError",
           "StaleValueError", "NodeLimitError", "MAX_NODE_LIMIT"]


class PygradError(Exception):
    """Base class of the errors pygrad raises for its own reasons."""


class StaleValueError(PygradError, ValueError):
    """A Value whose node no longer exists (its internals were tampered with)."""


class NodeLimitError(PygradError, MemoryError):
    """The arena is out of memory or at its node limit."""


def _messages():
    complex_msg = ("negative number raised to a non-integer power: micrograd would "
                   "return a complex number, which pygrad does not support")
    return {
        lib.PG_ERR_HANDLE: lambda: StaleValueError(
            "this Value does not refer to a live node (was its _h overwritten?)"),
        lib.PG_ERR_NOMEM: lambda: NodeLimitError(
            f"pygrad's node arena is full ({lib.pg_live_nodes()} live nodes): out of "
            "memory, or at the limit set by PYGRAD_MAX_NODES / pygrad.set_node_limit"),
        lib.PG_ERR_ZERODIV: lambda: ZeroDivisionError(
            "0.0 cannot be raised to a negative power"),
        lib.PG_ERR_OVERFLOW: lambda: OverflowError(34, "Numerical result out of range"),
        lib.PG_ERR_COMPLEX: lambda: ValueError(complex_msg),
        lib.PG_ERR_RANGE: lambda: OverflowError("math range error"),
        lib.PG_ERR_DOMAIN: lambda: ValueError("math domain error"),
        lib.PG_ERR_ARG: lambda: PygradError("invalid argument to pygrad's C core"),
        lib.PG_ERR_TAPE: lambda: PygradError("this tape was freed or never existed"),
    }


_ERRORS = _messages()


def error_for(status: int) -> BaseException:
    """The exception for a negative status code from the C core."""
    make = _ERRORS.get(status)
    return make() if make else PygradError(f"unexpected pygrad status {status}")


def check(status: int) -> int:
    """Return a non-negative status (often a handle); raise for an error code."""
    if status < 0:
        raise error_for(status)
    return status


MAX_NODE_LIMIT = 2**63 - 1


def set_node_limit(limit):
    """Cap the arena at `limit` live nodes (0: no cap, the default); making a
    node past it raises NodeLimitError, a MemoryError, once the nodes of dead
    Values are released.  Returns the old cap.  The environment variable
    PYGRAD_MAX_NODES sets it at import."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_NODE_LIMIT:
        raise ValueError(f"the node limit is an int from 0 to 2**63 - 1, not {limit!r}")
    return check(lib.pg_set_node_limit(limit))


def _limit_from_environment():
    text = os.environ.get("PYGRAD_MAX_NODES", "").strip()
    if text:
        try:
            set_node_limit(int(text))
        except ValueError:
            raise ValueError(f"PYGRAD_MAX_NODES must be an integer from 0 to 2**63 - 1, "
                             f"not {text!r}") from None


_limit_from_environment()
