"""Twilio's list envelope: the page of messages and the URIs of its neighbours.

Built the way Twilio builds it: every URI repeats the filters, ``PageSize`` and
``Page``; the next/previous URIs add a ``PageToken``; ``start``/``end`` are the
indexes of the page's first and last record in the whole listing.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

import msgspec

from dispatcher.core.twilio import API_VERSION, MessageResource, render_message
from dispatcher.messages.listing import Page, Position, Query


class MessagePage(msgspec.Struct):
    end: int
    first_page_uri: str
    messages: list[MessageResource]
    next_page_uri: str | None
    page: int
    page_size: int
    previous_page_uri: str | None
    start: int
    uri: str


_encoder: Final = msgspec.json.Encoder()


def page_uri(account_sid: str, query: Query, page: int, position: Position | None) -> str:
    params = [*query.filters, ("PageSize", str(query.page_size)), ("Page", str(page))]
    if position is not None:
        params.append(("PageToken", position.token()))
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages.json?{urlencode(params)}"


def encode_page(account_sid: str, query: Query, page: Page) -> bytes:
    start = query.page * query.page_size
    return _encoder.encode(
        MessagePage(
            end=start + max(len(page.records), 1) - 1,
            first_page_uri=page_uri(account_sid, query, 0, None),
            messages=[render_message(r) for r in page.records],
            next_page_uri=page_uri(account_sid, query, query.page + 1, page.last) if page.has_next else None,
            page=query.page,
            page_size=query.page_size,
            previous_page_uri=(
                page_uri(account_sid, query, query.page - 1, page.first)
                if query.page > 0 and page.first is not None
                else None
            ),
            start=start,
            uri=page_uri(account_sid, query, query.page, query.position),
        )
    )
