"""Dotted paths into decoded JSON or form payloads: ``messages[0].message-id``, ``source.userId``.

A path is parsed once, at spec load (``parse``), into steps: a key (any characters but
``.``, ``[`` and ``]``, so ``message-id`` and ``err-code`` need no quoting), a list index,
or ``[*]`` (every item: only in the ``items`` of a webhook, e.g. Cloud's
``entry[*].changes[*].value.statuses``). ``get`` walks it and answers None where the
payload has no such place (a missing key, a short list, a value of another type);
``every`` gathers what a path with ``[*]`` reaches; ``put`` builds the place (the simulator
writes the payloads a spec describes, the exact inverse of what the gateway reads).
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import attrs
import msgspec

Step = str | int
EVERY: Final = -1  # the ``[*]`` step

_STEP: Final = re.compile(r"([^.\[\]]+)|\[(\d{1,4}|\*)\]")
_WHOLE: Final = re.compile(r"^[^.\[\]]+(\[(\d{1,4}|\*)\])*(\.[^.\[\]]+(\[(\d{1,4}|\*)\])*)*$")


class PathError(ValueError):
    """A path that is not ``key(.key|[index])*``."""


def attr(key: str) -> str:
    """The attribute holding JSON key ``key`` in the Structs a spec's typed decoder builds
    (``channels.spec_schema``): any key is a valid identifier this way."""
    return f"k{zlib.crc32(key.encode()):08x}"


@attrs.frozen
class Path:
    """A parsed path. ``get`` and ``every`` read the generic JSON of ``msgspec.json.decode``
    (dicts, lists) and the Structs of a spec's typed decoder alike (each key knows its attribute)."""

    text: str
    steps: tuple[Step, ...]
    _attrs: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_attrs", tuple("" if isinstance(s, int) else attr(s) for s in self.steps))

    @property
    def wild(self) -> bool:
        return EVERY in self.steps

    def get(self, doc: object) -> object:
        """The value at this path in ``doc``, or None (a path with ``[*]``: use ``every``)."""
        node = doc
        for step, name in zip(self.steps, self._attrs, strict=True):
            if node is None:
                return None
            if isinstance(step, int):
                if step == EVERY or not isinstance(node, list) or step >= len(node):
                    return None
                node = node[step]
            elif isinstance(node, dict):
                node = node.get(step)
            elif isinstance(node, msgspec.Struct):
                node = getattr(node, name, None)
            else:
                return None
        return node

    def every(self, doc: object) -> list[object]:
        """Everything this path reaches in ``doc``: a list's items at its end, and every item
        at each ``[*]`` on the way (a value that is not a list at the end is one item)."""
        nodes = [doc]
        for step, name in zip(self.steps, self._attrs, strict=True):
            reached: list[object] = []
            for node in nodes:
                if isinstance(step, int):
                    if isinstance(node, list):
                        if step == EVERY:
                            reached.extend(node)
                        elif step < len(node):
                            reached.append(node[step])
                    continue
                found = (
                    node.get(step)
                    if isinstance(node, dict)
                    else getattr(node, name, None)
                    if isinstance(node, msgspec.Struct)
                    else None
                )
                if found is not None:
                    reached.append(found)
            nodes = reached
        out: list[object] = []
        for node in nodes:
            if isinstance(node, list):
                out.extend(node)
            elif node is not None:
                out.append(node)
        return out

    def put(self, doc: dict[str, object], value: object) -> None:
        """Set the value at this path in ``doc``, making the dicts and lists on the way
        (``[*]`` writes the first item)."""
        self._put(doc, value)

    def _put(self, doc: dict[str, object], value: object) -> None:
        """Set the value at this path in ``doc``, making the dicts and lists on the way."""
        node: object = doc
        steps = tuple(0 if step == EVERY else step for step in self.steps)
        for step, following in zip(steps, (*steps[1:], None), strict=True):
            fresh: object = value if following is None else ([] if isinstance(following, int) else {})
            if isinstance(step, int):
                assert isinstance(node, list)
                while len(node) <= step:
                    node.append(None)
                if following is None or node[step] is None:
                    node[step] = fresh
                node = node[step]
            else:
                assert isinstance(node, dict)
                if following is None or step not in node:
                    node[step] = fresh
                node = node[step]

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Path:
    """``"a.b[0].c"`` -> a ``Path``; the empty path is the document itself."""
    if text == "":
        return Path("", ())
    if not _WHOLE.match(text):
        raise PathError(f"not a path: {text!r} (expected key(.key|[index])*)")
    return Path(
        text,
        tuple(key if key else (EVERY if index == "*" else int(index)) for key, index in _STEP.findall(text)),
    )
