"""The ``wadispatch`` CLI run in a test, against a daemon serving in the same trio run."""

from __future__ import annotations

import pytest
import trio

from dispatcher.cli import main


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a worker thread (it is synchronous) while the daemon serves in this trio run."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err
