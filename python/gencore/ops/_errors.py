"""Python exception types for errors raised by the compiled ops.

The C++ ops (csrc/common/stable_api.h) throw ``std::invalid_argument`` for a bad argument,
which reaches Python as ``ValueError``. C++ has no standard exception that Python
raises as ``TypeError``: a dtype error carries the tag ``[TypeError] `` in front of its
message, and :func:`typed` re-raises it as ``TypeError`` without the tag.
"""

from __future__ import annotations

import functools

_TAG = "[TypeError] "


def typed(op):
    """``op`` (a ``torch.ops.gencore`` op) with its tagged dtype errors raised as TypeError."""

    @functools.wraps(op)
    def call(*args, **kwargs):
        try:
            return op(*args, **kwargs)
        except ValueError as e:
            message = str(e)
            if message.startswith(_TAG):
                raise TypeError(message[len(_TAG):]) from None
            raise

    return call
