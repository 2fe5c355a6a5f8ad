"""Headless Chromium for views: the system's browser (Debian's `chromium`), driven by Playwright.

Used by the browser tests and by `make demo` (screenshots under results/views/). No browser
is downloaded: Playwright drives the Chromium at `INTERP_CHROMIUM` or `/usr/bin/chromium`.

    with Browser() as browser:
        page = browser.open(path_to_html)            # offline: any network request is refused and logged
        page.hover("canvas"); page.screenshot(...)
        assert browser.problems(page) == []          # console errors, page errors, network requests
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

# Chromium's own background traffic (updates, sync, field trials) is switched off: on a closed
# network it fails loudly, and a view must make no request of any kind.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                 "--disable-dev-shm-usage"]
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")


def chromium_path() -> str:
    """The Chromium binary to drive: $INTERP_CHROMIUM, else `chromium` on PATH; a clear error if none."""
    found = os.environ.get("INTERP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        raise RuntimeError("no Chromium found: install Debian's chromium (apt-get install chromium chromium-driver, "
                           "which `make test` does) or set INTERP_CHROMIUM to a Chromium binary")
    return found


class Browser:
    """A headless Chromium session; `open` gives pages that record their problems."""

    def __init__(self, viewport: tuple[int, int] = (1200, 900)) -> None:
        self.viewport = viewport
        self._playwright: Any = None
        self._browser: Any = None

    def __enter__(self) -> "Browser":
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as err:  # pragma: no cover - the test extra installs it
            raise RuntimeError("the browser driver needs Playwright: pip install playwright "
                               "(no browser download: the system Chromium is used)") from err
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS,
                                                         headless=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None

    def open(self, target: Union[str, Path], *, offline: bool = True, allow: tuple[str, ...] = (),
             wait_for: Optional[str] = ".interp-view[data-rendered]", timeout_ms: int = 30_000) -> Any:
        """A new page at `target` (an .html path, or a URL). offline: every request that is not a
        local file (or a URL starting with one of `allow`) is aborted and recorded in
        page.iv_requests. Console errors and uncaught exceptions go to page.iv_errors. Waits for
        `wait_for` (by default: a rendered view) unless it is None."""
        context = self._browser.new_context(viewport={"width": self.viewport[0], "height": self.viewport[1]})
        page = context.new_page()
        page.iv_errors, page.iv_requests = [], []
        page.on("console", lambda msg: page.iv_errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type in ("error", "assert") else None)
        page.on("pageerror", lambda err: page.iv_errors.append(f"pageerror: {err}"))

        def route(r: Any) -> None:
            url = r.request.url
            if url.startswith(LOCAL_SCHEMES) or any(url.startswith(a) for a in allow):
                r.continue_()
            else:
                page.iv_requests.append(url)
                r.abort()

        if offline:
            context.route("**/*", route)
        url = target if isinstance(target, str) and "://" in target else Path(target).resolve().as_uri()
        page.goto(url, wait_until="load", timeout=timeout_ms)
        if wait_for:
            page.wait_for_selector(wait_for, timeout=timeout_ms, state="attached")
        return page

    @staticmethod
    def problems(page: Any) -> list[str]:
        """Everything that went wrong on `page`: console errors, uncaught errors, network requests."""
        return list(page.iv_errors) + [f"network request: {u}" for u in page.iv_requests]


def screenshot(html_path: Union[str, Path], png_path: Union[str, Path], *, browser: Optional[Browser] = None,
               full_page: bool = True) -> Path:
    """Render the page at `html_path` offline and save a PNG screenshot; raises if the page logged
    an error or tried the network."""
    own = browser is None
    browser = Browser().__enter__() if own else browser
    try:
        page = browser.open(html_path)
        png_path = Path(png_path)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png_path), full_page=full_page)
        problems = Browser.problems(page)
        page.context.close()
        if problems:
            raise RuntimeError(f"{html_path}: " + "; ".join(problems))
        return png_path
    finally:
        if own:
            browser.close()


__all__ = ["Browser", "CHROMIUM_ARGS", "chromium_path", "screenshot"]
