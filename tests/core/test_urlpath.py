"""Ids from outside are checked against their character set, and every path segment is escaped."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.channels.cloud import CloudChannel
from dispatcher.channels.onprem import OnPremChannel
from dispatcher.core.urlpath import IdError, check, path, valid

# Real ids, as the APIs and their fixtures show them.
REAL = [
    ("media_id", "d674171b-b912-4d76-9118-e2d571e16f33"),  # On-Prem (localwab fixtures, reference 1.6)
    ("media_id", "1037543291543636"),  # Cloud: Graph object ids are digits
    ("message_id", "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"),  # reference 2.3
    ("message_id", "wamid.HBgMOTE4MTI1MTg0NjMyFQIAERgSQjVFQ0ZBMjNEN0MzMjQ2MjBGAA=="),
    ("message_id", "ABGGeZRAZ1NvAgo-sO98aw3w7J9b"),  # On-Prem inbound (reference 1.8)
    ("message_id", "gBGGeZRAZ1NvAgn4gdjDH8IpKyM"),  # On-Prem status
    ("phone_number_id", "106540352242922"),
    ("api_version", "v23.0"),
    ("template_name", "order_update"),
]

HOSTILE = [
    "",
    ".",
    "..",
    "../../v1/settings/application?x=",
    "a/../b",
    "%2e%2e",
    "%2F",
    "abc?x=1",
    "abc#f",
    "a b",
    "a\r\nHost: evil",
    "a\x00b",
    "１２３",  # fullwidth digits  # noqa: RUF001
    "٣٤٥",  # Arabic-Indic digits
    "d674171b\u2215b912",  # division slash
    "x" * 600,
]


@pytest.mark.parametrize(("kind", "value"), REAL)
def test_real_ids_pass(kind: str, value: str) -> None:
    assert check(kind, value) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("kind", ["media_id", "phone_number_id", "api_version", "template_name"])
def test_hostile_values_fail_every_kind(kind: str, value: str) -> None:
    assert not valid(kind, value)  # type: ignore[arg-type]
    with pytest.raises(IdError):
        check(kind, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [v for v in HOSTILE if "/" not in v])
def test_hostile_message_ids_fail(value: str) -> None:
    """Message ids are base64 (``+`` and ``/`` included, with ``=`` padding): never a path
    segment here, and ``path`` would escape a ``/`` anyway."""
    assert not valid("message_id", value)


def test_the_error_shows_a_bounded_prefix_of_the_value() -> None:
    with pytest.raises(IdError) as caught:
        check("media_id", "/" * 10_000)
    assert len(str(caught.value)) < 120


@given(st.lists(st.text(min_size=1), min_size=1, max_size=4))
def test_each_segment_stays_one_segment(segments: list[str]) -> None:
    """Whatever a segment holds, it cannot add a segment, a query or a fragment, and decodes back."""
    if any(s in (".", "..") for s in segments):
        with pytest.raises(IdError):
            path(*segments)
        return
    built = path(*segments).decode("ascii")
    assert built.startswith("/")
    assert "?" not in built and "#" not in built
    parts = built[1:].split("/")
    assert [urllib.parse.unquote(p) for p in parts] == segments
    assert all(p not in (".", "..") for p in parts)


def test_dot_and_empty_segments_are_refused() -> None:
    for bad in ("", ".", ".."):
        with pytest.raises(IdError):
            path("v1", bad)


def test_channels_build_media_paths_from_checked_ids() -> None:
    assert OnPremChannel().media_target("d674171b-b912-4d76-9118-e2d571e16f33") == (
        b"/v1/media/d674171b-b912-4d76-9118-e2d571e16f33"
    )
    assert (
        CloudChannel("106540352242922", "v23.0").media_target("1037543291543636")
        == b"/v23.0/1037543291543636"
    )
    for channel in (OnPremChannel(), CloudChannel("106540352242922", "v23.0")):
        for value in HOSTILE:
            with pytest.raises(IdError):
                channel.media_target(value)


def test_cloud_messages_path_refuses_ids_that_are_not_ids() -> None:
    assert CloudChannel("106540352242922", "v23.0").messages_path == b"/v23.0/106540352242922/messages"
    with pytest.raises(IdError):
        CloudChannel("1065/../../me", "v23.0")
    with pytest.raises(IdError):
        CloudChannel("106540352242922", "v23.0/..")
