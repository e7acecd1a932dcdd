"""A typed decoder for a spec's JSON webhooks, built from the paths the spec reads.

Decoding a webhook into generic JSON builds every dict and string of it; a Cloud status
carries a dozen fields of which three are read. From the paths of ``[webhook]`` (items,
id, status, recipient...) this builds msgspec Struct types holding only those places, so
msgspec skips the rest without building it: the same typed pass the hand-written decoders
make (about 0.2 us per status instead of ~2.7 us generic, bench/RESULTS.md issue 16).

``paths.Path`` reads what either pass produced: the Structs of the typed pass (a key's
attribute is ``paths.attr(key)``), or the dicts of the generic pass the readers fall back
on when a payload does not have the shape the types expect (a string where an object was
read).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from dispatcher.core.channelspec import paths
from dispatcher.core.channelspec.paths import attr

_EVERY: Final = paths.EVERY


class _Node:
    """A place in the payload: the keys read below it, and whether it is a list of such places."""

    def __init__(self) -> None:
        self.keys: dict[str, _Node] = {}
        self.listed: _Node | None = None  # the items' node, when this place is a list
        self.leaf = False

    def add(self, steps: Iterable[str | int]) -> _Node:
        node = self
        for step in steps:
            if isinstance(step, int):
                if node.listed is None:
                    node.listed = _Node()
                node = node.listed
            else:
                node = node.keys.setdefault(step, _Node())
        return node


def _type(node: _Node, name: str, counter: list[int]) -> Any:
    """The msgspec type of a place (``object`` for a value read as it is)."""
    if node.listed is not None:
        if node.keys or node.leaf:
            return object  # read both as a list and otherwise: take it as it comes
        return list[_type(node.listed, name, counter)]  # type: ignore[misc]
    if not node.keys:
        return object
    counter[0] += 1
    fields = [(attr(key), _type(child, name, counter) | None, None) for key, child in node.keys.items()]
    rename = {attr(key): key for key in node.keys}
    return msgspec.defstruct(f"{name}{counter[0]}", fields, rename=rename, kw_only=True)


def typed_decoder(
    item_paths: Iterable[tuple[paths.Path, Iterable[paths.Path]]], name: str
) -> msgspec.json.Decoder[Any]:
    """A decoder of the document holding, at each items path, items read at their field paths."""
    root = _Node()
    for items, fields in item_paths:
        place = root.add(items.steps)
        element = place.add([_EVERY]) if items.steps else place
        for field in fields:
            element.add(field.steps).leaf = True
    return msgspec.json.Decoder(_type(root, name, [0]))
