"""The numbers this daemon runs now: the config's, and those onboarded while it runs.

A number comes from the config file (``[[numbers]]``) or from onboarding
(``wadispatch numbers add``: kept in LMDB, started without a restart). The
config wins: a number in both runs as configured. A live reload replaces the
config's part; the onboarded part changes only through onboarding.
"""

from __future__ import annotations

from typing import final

from dispatcher.config import Config, NumberConfig
from dispatcher.service.numbers import cloud_pace
from dispatcher.webhooks.account import WatchedNumber


@final
class Roster:
    def __init__(self, config: Config, onboarded: list[NumberConfig] | None = None) -> None:
        self._config = config
        self._onboarded: dict[str, NumberConfig] = {n.number: n for n in onboarded or ()}

    @property
    def config(self) -> Config:
        return self._config

    def set_config(self, config: Config) -> None:
        """A live reload's config is in force from now on."""
        self._config = config

    def numbers(self) -> list[NumberConfig]:
        """Every number to run: the config's, then the onboarded ones it does not configure."""
        configured = {n.number for n in self._config.numbers}
        return [*self._config.numbers, *(n for n in self._onboarded.values() if n.number not in configured)]

    def get(self, number: str) -> NumberConfig | None:
        for num in self.numbers():
            if num.number == number:
                return num
        return None

    def configured(self, number: str) -> bool:
        """``number`` is in the config file (onboarding does not start or stop its actor)."""
        return any(n.number == number for n in self._config.numbers)

    def add_onboarded(self, num: NumberConfig) -> None:
        self._onboarded[num.number] = num

    def remove_onboarded(self, number: str) -> NumberConfig | None:
        return self._onboarded.pop(number, None)

    def onboarded(self) -> list[NumberConfig]:
        return list(self._onboarded.values())

    def watched(self) -> list[WatchedNumber]:
        """The Cloud numbers, as the account watch needs them."""
        return [
            WatchedNumber(number=n.number, waba_id=n.waba, pace=cloud_pace(n))
            for n in self.numbers()
            if n.cloud is not None
        ]
