"""The callback journal: bounded, per message in order, give-ups counted per destination."""

from __future__ import annotations

from dispatcher.core.callbacks import CallbackEntry
from dispatcher.webhooks.callback_journal import CallbackJournal


def entry(sid: str, url: str = "https://hooks.example.com/cb", status: str = "sent") -> CallbackEntry:
    return CallbackEntry(
        kind="status",
        url=url,
        account_sid="AC" + "0" * 32,
        number="+15550000001",
        customer="+15551234567",
        sid=sid,
        params=[("MessageSid", sid), ("MessageStatus", status)],
        created_at=1.0,
    )


def test_keeps_the_newest_attempts_and_finds_a_messages_in_order() -> None:
    journal = CallbackJournal(size=3)
    journal.note(entry("SM1"), 10.0, "retry", http_status=503)
    journal.note(entry("SM2"), 11.0, "delivered", http_status=200)
    journal.note(entry("SM1", status="delivered"), 12.0, "delivered", http_status=204)
    journal.note(entry("SM3"), 13.0, "refused", error="private address")
    assert [(a.at, a.outcome, a.http_status) for a in journal.for_message("SM1")] == [
        (12.0, "delivered", 204)
    ]
    assert [a.sid for a in journal.newest()] == ["SM3", "SM1", "SM2"]
    assert journal.for_message("SM3")[0].error == "private address"
    assert journal.for_message("SM2")[0].status_param == "sent"


def test_give_ups_count_per_destination_origin() -> None:
    journal = CallbackJournal(size=1)
    for i in range(3):
        journal.note(entry(f"SM{i}", "https://Hooks.example.com/a?x=1"), float(i), "gave_up", error="too old")
    journal.note(entry("SM9", "http://other.example:8080/b"), 9.0, "gave_up")
    journal.note(entry("SM10", "http://other.example:8080/b"), 10.0, "retry")
    assert journal.gave_up_by_origin == {"https://hooks.example.com:443": 3, "http://other.example:8080": 1}
