"""Positions: fractional indexes, so that moving a task writes that task alone.

A key is an *integer part* and a *fraction*, in base-62 digits ordered as bytes
(`0-9A-Za-z`), compared byte by byte (PostgreSQL's column has collation "C"). The integer
part's first character says how many digits follow (`a`..`z`: 1 to 26 for the integers from
zero up, `Z`..`A`: 1 to 26 for those below), so the key just before the first one, or just
after the last one, is the integer one less or one more: adding tasks at either end makes keys
longer only logarithmically (10,000 new tasks in a row: 4 characters). Between two keys, the
midpoint of their fractions; the fraction never ends with `0`, so there is always room.

Moves into one gap, again and again, lengthen keys by about one character every six moves.
When a new key would be longer than the bound (`POSITION_MAX_LENGTH`), or two neighbours have
equal keys (a task restored from the trash keeps its key), the owner's live tasks are
*rebalanced*: given evenly spaced integer keys in their order, in one statement that takes one
revision (`rebalance_statement`).
"""

from functools import cache

import sqlalchemy as sa
from sqlmodel import select, update

from backend.models import TASKS
from backend.services.task_statements import owned

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE = len(DIGITS)
_VALUE = {digit: value for value, digit in enumerate(DIGITS)}
FIRST_KEY = "a0"  # the integer zero: a user's first task
t = TASKS.c


def _integer_length(head: str) -> int:
    if "a" <= head <= "z":
        return ord(head) - ord("a") + 2
    if "A" <= head <= "Z":
        return ord("Z") - ord(head) + 2
    raise ValueError(f"not a position key: {head!r}")


def _split(key: str) -> tuple[str, str]:
    length = _integer_length(key[0])
    if len(key) < length:
        raise ValueError(f"not a position key: {key!r}")
    return key[:length], key[length:]


def _increment(integer: str) -> str | None:
    """The next integer; None past the largest."""
    head, digits = integer[0], list(integer[1:])
    for index in range(len(digits) - 1, -1, -1):
        value = _VALUE[digits[index]] + 1
        if value < BASE:
            digits[index] = DIGITS[value]
            return head + "".join(digits)
        digits[index] = DIGITS[0]
    # Every digit carried: one digit more (or fewer, below zero).
    if head == "Z":
        return FIRST_KEY
    if head == "z":
        return None
    head = chr(ord(head) + 1)
    if head > "a":
        digits.append(DIGITS[0])
    else:
        digits.pop()
    return head + "".join(digits)


def _decrement(integer: str) -> str | None:
    """The previous integer; None before the smallest."""
    head, digits = integer[0], list(integer[1:])
    for index in range(len(digits) - 1, -1, -1):
        value = _VALUE[digits[index]] - 1
        if value >= 0:
            digits[index] = DIGITS[value]
            return head + "".join(digits)
        digits[index] = DIGITS[-1]
    if head == "a":
        return "Z" + DIGITS[-1]
    if head == "A":
        return None
    head = chr(ord(head) - 1)
    if head < "Z":
        digits.append(DIGITS[-1])
    else:
        digits.pop()
    return head + "".join(digits)


def _midpoint(low: str, high: str | None) -> str:
    """A fraction strictly between `low` and `high` (None: 1), neither ending with `0`."""
    if high is not None:
        shared = 0
        while shared < len(high) and (low[shared] if shared < len(low) else "0") == high[shared]:
            shared += 1
        if shared:
            return high[:shared] + _midpoint(low[shared:], high[shared:])
    low_digit = _VALUE[low[0]] if low else 0
    high_digit = _VALUE[high[0]] if high is not None else BASE
    if high_digit - low_digit > 1:
        return DIGITS[(low_digit + high_digit) // 2]
    if high is not None and len(high) > 1:
        return high[0]
    return DIGITS[low_digit] + _midpoint(low[1:], None)


def key_between(before: str | None, after: str | None) -> str | None:
    """A key that sorts after `before` and before `after` (None: no bound on that side); None
    when there is none (equal keys: rebalance first)."""
    if before is not None and after is not None and before >= after:
        return None
    if before is None and after is None:
        return FIRST_KEY
    if before is None:
        assert after is not None
        integer, fraction = _split(after)
        if fraction:  # the integer alone sorts just before
            return integer
        smaller = _decrement(integer)
        return smaller if smaller is not None else integer + _midpoint("", fraction)
    integer, fraction = _split(before)
    if after is None:
        larger = _increment(integer)
        return larger if larger is not None else integer + _midpoint(fraction, None)
    after_integer, after_fraction = _split(after)
    if integer == after_integer:
        return integer + _midpoint(fraction, after_fraction)
    larger = _increment(integer)
    if larger is not None and larger < after:
        return larger
    return integer + _midpoint(fraction, None)


def rebalanced_key(rank: int, width: int) -> str:
    """The key a rebalance gives the task at `rank` (from 0): an integer of `width` digits."""
    digits = "".join(DIGITS[rank // BASE**power % BASE] for power in range(width - 1, -1, -1))
    return chr(ord("a") + width - 1) + digits


def rebalance_width(count: int) -> int:
    """How many digits the rebalanced keys of `count` tasks have (2 at least)."""
    width = 2
    while BASE**width < count:
        width += 1
    return width


@cache
def rebalance_statement(width: int) -> sa.Update:
    """Give the owner's live tasks the keys `rebalanced_key(rank, width)` in their order, with
    the revision `revision` (one for all) and their version one more: their representation
    changes, though their order does not."""
    rank = sa.func.row_number().over(order_by=(t.position, t.id)) - 1
    ranked = (
        select(t.id, sa.type_coerce(rank, sa.BigInteger).label("rank"))
        .where(owned())
        .subquery("ranked")
    )
    key: sa.ColumnElement[str] = sa.literal(chr(ord("a") + width - 1))
    for power in range(width - 1, -1, -1):
        digit = sa.cast(ranked.c.rank // BASE**power % BASE + 1, sa.Integer)
        key = key + sa.func.substr(sa.literal(DIGITS), digit, 1)
    return (
        update(TASKS)
        .where(owned(t.id == ranked.c.id))
        .values(
            position=key,
            version=t.version + 1,
            revision=sa.bindparam("revision", type_=sa.BigInteger),
        )
    )
