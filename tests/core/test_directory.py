"""The number directory: a reload swaps in a new snapshot and keeps removed numbers for webhooks only."""

from __future__ import annotations

from dispatcher.core.directory import CloudHook, Directory, NumberInfo

ACCOUNT = "AC" + "0" * 32
ONE, TWO, THREE = "+15550000001", "+15550000002", "+15550000003"


def info(number: str, secret: str = "s3cret", **kw: object) -> NumberInfo:
    return NumberInfo(number, ACCOUNT, secret, **kw)  # type: ignore[arg-type]


def test_a_removed_number_takes_no_messages_but_its_webhooks_still_apply() -> None:
    directory = Directory([info(ONE), info(TWO, "old")])
    before = directory.snapshot
    directory.reload([info(ONE)])
    assert directory.snapshot is not before  # a new snapshot; the old one is unchanged
    assert before.configured.keys() == {ONE, TWO} and before.webhooks_only == {}
    assert directory.get(TWO) is None  # no new messages from it
    assert directory.webhook_number("15550000002", "old") == info(TWO, "old")  # as last configured
    assert directory.by_digits("15550000002") == info(TWO, "old")


def test_webhooks_only_numbers_are_kept_across_reloads_until_configured_again() -> None:
    directory = Directory([info(ONE), info(TWO, "old")])
    directory.reload([info(ONE)])
    directory.reload([info(ONE), info(THREE)])  # TWO stays kept for its webhooks
    assert directory.snapshot.webhooks_only.keys() == {TWO}
    assert directory.webhook_number("15550000002", "old") is not None
    directory.reload([info(ONE), info(TWO, "new")])  # configured again, with a new secret
    assert directory.snapshot.webhooks_only.keys() == {THREE}
    assert directory.get(TWO) == info(TWO, "new")
    assert directory.webhook_number("15550000002", "old") is None
    assert directory.webhook_number("15550000002", "new") == info(TWO, "new")


def test_cloud_routes_find_only_cloud_numbers() -> None:
    hook = CloudHook("1234", app_secret="app", verify_token="verify")
    directory = Directory([info(ONE), info(TWO, cloud=hook)])
    assert directory.cloud_number("15550000001") is None
    assert directory.cloud_number("15550000002") == info(TWO, cloud=hook)
    assert directory.webhook_number("15550000001", "s3cret", via="header") is None  # it uses the path
