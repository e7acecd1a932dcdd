"""Which daemon does a request's share of some buckets: here, their owner, or nobody right now.

A request about several buckets (a list over an account, an app-level Cloud webhook) does the
buckets this daemon serves itself and asks each other owner, once, for its buckets; the owner
is told which buckets in a header (``parse``), and refuses any it does not serve now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from dispatcher.ops.cluster import OwnerTable
from dispatcher.ownership.interface import Owner


@attrs.frozen
class Placement:
    """Buckets by who does them: ``local`` here, ``remote`` by owner (one ask each), ``unowned``
    (no owner now, or ours by the table yet not served here: between two owners)."""

    local: list[int]
    unowned: list[int]
    remote: list[tuple[Owner, list[int]]]


def place(buckets: Iterable[int], here: Callable[[int], bool], owners: OwnerTable) -> Placement:
    """``here``: bucket b is served by this daemon (its Store is the live one)."""
    local: list[int] = []
    unowned: list[int] = []
    remote: dict[str, tuple[Owner, list[int]]] = {}
    for bucket in buckets:
        if here(bucket):
            local.append(bucket)
            continue
        owner = owners.owner(bucket)
        if owner is None or owner.owner_id == owners.owner_id:
            unowned.append(bucket)
        else:
            remote.setdefault(owner.owner_id, (owner, []))[1].append(bucket)
    return Placement(local, unowned, list(remote.values()))


def parse(header: str, count: int) -> list[int] | None:
    """The bucket indexes of a part header (``"1,3"``), sorted; None unless each is one of ``count``."""
    try:
        indexes = sorted({int(i) for i in header.split(",")})
    except ValueError:
        return None
    if not indexes or not all(0 <= i < count for i in indexes):
        return None
    return indexes


def names(buckets: Iterable[int]) -> str:
    """``1, 3``: buckets as an error message names them."""
    return ", ".join(map(str, buckets))
