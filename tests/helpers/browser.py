"""Debian's chromium, headless, driven through its chromedriver by selenium, from a trio test.

No browser download and no network: the driver's path is given, so Selenium Manager
is never run, and chromium starts with its background services off. selenium is
blocking: every call goes through ``trio.to_thread`` so the daemon under test keeps
serving in the same trio run. ``browser_missing()`` says why a test must skip.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

CHROMIUM = Path(os.environ.get("WADISPATCH_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("WADISPATCH_CHROMEDRIVER", "/usr/bin/chromedriver"))
T = TypeVar("T")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            return f"{program} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make .venv/.installed)"
    return None


PAGE_LOAD_TIMEOUT = 45  # seconds; a loaded machine takes ~1 s per console page


class Browser:
    """One headless chromium window; ``call`` runs a blocking selenium call in a thread."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args)

    async def open(self, path: str) -> None:
        await self.call(self.driver.get, self.base_url + path)

    async def script(self, source: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, source, *args)

    async def wait_for(self, source: str, *, timeout: float = 15.0, step: float = 0.1) -> Any:
        """Run ``source`` (a JS expression's ``return``) until it gives something truthy."""
        with trio.fail_after(timeout):
            while True:  # the page changes in the browser: nothing here to wait on but time
                result = await self.script(source)
                if result:
                    return result
                await trio.sleep(step)

    async def wait_for_url(self, ending: str, *, timeout: float = 15.0) -> None:
        """Until the page's URL ends with ``ending`` (a form post navigates after click() returns)."""
        with trio.fail_after(timeout):
            while not (await self.call(lambda: self.driver.current_url)).endswith(ending):  # noqa: ASYNC110 - the browser navigates: nothing to wait on but time
                await trio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        assert await self.call(self.driver.save_screenshot, str(path))

    async def texts(self, css: str) -> list[str]:
        """The visible text of every element ``css`` selects (WebDriver reads: works without JavaScript)."""

        def read() -> list[str]:
            from selenium.webdriver.common.by import By

            return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]

        return await self.call(read)

    async def click(self, css: str) -> None:
        def press() -> None:
            from selenium.webdriver.common.by import By

            self.driver.find_element(By.CSS_SELECTOR, css).click()

        await self.call(press)

    async def type_into(self, css: str, text: str) -> None:
        def send() -> None:
            from selenium.webdriver.common.by import By

            self.driver.find_element(By.CSS_SELECTOR, css).send_keys(text)

        await self.call(send)

    async def console_errors(self) -> list[str]:
        """The page's console messages at level SEVERE (CSP violations are reported there)."""
        entries = await self.call(self.driver.get_log, "browser")
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]


def _start(profile: Path, width: int, height: int, javascript: bool) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        "--no-proxy-server",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:  # as a user with JavaScript switched off sees the pages
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    # A page that never finishes loading must fail the test in seconds: WebDriver's default waits 300 s
    # per navigation, and a blocking call in a worker thread outlives the test's trio deadline.
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    driver.set_script_timeout(PAGE_LOAD_TIMEOUT)
    return driver


@asynccontextmanager
async def open_browser(
    base_url: str, profile: Path, *, width: int = 1500, height: int = 1000, javascript: bool = True
) -> AsyncIterator[Browser]:
    """A headless chromium for ``base_url``; quit (its processes stopped) when the block ends."""
    driver = await trio.to_thread.run_sync(_start, profile, width, height, javascript)
    try:
        yield Browser(driver, base_url)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(driver.quit)
