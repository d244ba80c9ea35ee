"""The price coefficient on the wire, and what the worker makes of it (pure).

COCOON keeps the coefficient as an int32 per-mille (WorkerRunner.h:199) and
reports exactly that (``localconfig.coefficient``, WorkerRunner.cpp:714), but
``/request/change_coefficient`` takes a multiplier, parses it with ``strtod``
and truncates ``d * 1000`` to an int32 (WorkerRunner.h:173-183). A decimal
such as ``1.001`` is a double slightly *below* 1.001, so ``1.001 * 1000``
truncates to 1000: 95 of the per-mille values 100-10000 written as
``f"{v / 1000:g}"`` come back one lower, and an operator comparing the
reading with the spec would send them again at every check.

So the operator sends, for ``v``, the shortest decimal whose double lands
exactly on ``v`` under that arithmetic (:func:`wire_coefficient`), and
:func:`applied_per_mille` states the arithmetic for checking it.
"""

from __future__ import annotations

import math


def applied_per_mille(text: str) -> int | None:
    """The coefficient a worker applies for ``?coefficient=text``, or None where it
    answers "failed to parse ... as double" and applies nothing (WorkerRunner.h:174-178).

    ``static_cast<td::int32>(d * 1000)`` (WorkerRunner.h:180): the IEEE double
    product, truncated toward zero. Python's ``float()`` is correctly rounded
    like glibc's ``strtod``, and its ``*`` is the same IEEE multiplication.
    """
    try:
        d = float(text)
    except ValueError:
        return None
    if not math.isfinite(d) or not -(2**31) <= d * 1000 < 2**31:
        return None  # out of an int32: undefined behaviour in C++, never sent
    return math.trunc(d * 1000)


def wire_coefficient(per_mille: int) -> str:
    """The ``coefficient=`` value a worker turns into exactly ``per_mille``.

    ``per_mille / 1000`` is the double nearest the decimal; where its product
    with 1000 falls short of ``per_mille`` the next double up does not (its
    product moves by about one ulp of ``per_mille``, far below 1).
    ``repr`` is the shortest decimal that reads back as that double.
    """
    if not 0 <= per_mille < 2**31 // 1000:
        raise ValueError(f"coefficient {per_mille} per mille is out of range")
    d = per_mille / 1000
    while math.trunc(d * 1000) < per_mille:
        d = math.nextafter(d, math.inf)
    text = repr(d)
    if applied_per_mille(text) != per_mille:  # the docstring's claim, checked
        raise ArithmeticError(f"no decimal lands on {per_mille} per mille")
    return text
