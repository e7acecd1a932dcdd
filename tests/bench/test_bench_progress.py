"""bench progress bars: on stderr when asked (a terminal), silent otherwise so the JSON line stays alone."""

from __future__ import annotations

import pytest

from bench.progress import bars


def test_bars_draw_on_stderr_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    with bars(3, "accepted", "delivered", enabled=True) as bar:
        bar.update("accepted", 3)
        bar.update("delivered", 2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "accepted" in err and "3/3" in err and "delivered" in err and "2/3" in err


def test_bars_are_silent_when_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    with bars(3, "accepted", enabled=False) as bar:
        bar.update("accepted", 1)
    assert capsys.readouterr() == ("", "")
    with pytest.raises(KeyError), bars(3, "accepted", enabled=False) as bar:
        bar.update("unknown", 1)
