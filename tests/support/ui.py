"""The planner page in a real browser: Playwright driving Debian's Chromium, headless.

`planner_service()` runs the embedded service (`atp migrate`, `atp demo`, `atp serve`) in
a fresh data directory; `chromium()` launches /usr/bin/chromium (playwright's own browser
download is never used: `.ci/run` installs the Debian package); `sign_in(page, url, token)`
signs in through the form. Run as a module, it takes a screenshot of every page into
docs/ui/ (by hand, after a change to the page):

    .venv/bin/python -m tests.support.ui
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.support.server import ADMIN_TOKEN, Server, atp, running_service, service_env

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"


@contextmanager
def planner_service(workers: int = 1) -> Iterator[Server]:
    """The embedded service with the demo catalogue (3 locations, 3 channels, 50 SKUs)."""
    with tempfile.TemporaryDirectory(prefix="atp-ui-") as data_dir:
        env = service_env(None, data_dir)
        atp("migrate", env=env)
        atp("demo", env=env)
        with running_service(env, workers=workers) as server:
            yield server


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True)


def sign_in(page: Page, url: str, token: str, then: str = "/ui/channels") -> None:
    """Sign in through the form (from the page `then`, which sends the visitor to it) and
    wait until `then` is shown."""
    page.goto(f"{url}{then}")
    page.wait_for_url(f"{url}/ui/sign-in**")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(lambda now: now == f"{url}{then}")


def take_screenshots(server: Server, browser: Browser, out: Path = SCREENSHOTS) -> list[Path]:
    """A full-page screenshot of every page (a laptop-sized window, and the channel page
    on a tablet-sized one), the preview of a buffer change included; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    url = server.url
    taken = []
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()

    def shot(name: str) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    page.goto(f"{url}/ui/sign-in")
    shot("sign-in")
    sign_in(page, url, ADMIN_TOKEN)
    shot("channels")
    page.goto(f"{url}/ui/channels/web")
    page.fill("input[name=buffer]", "6")
    page.click("#preview-button")
    page.wait_for_selector("#preview-result")
    shot("channel-preview")
    for name, path in [
        ("safety-stock", "/ui/safety-stock"),
        ("low-stock", "/ui/stock?channel=pos&status=low_stock"),
        ("item", "/ui/items/TEE-BLK-M"),
        ("operations", "/ui/operations"),
    ]:
        page.goto(f"{url}{path}")
        shot(name)
    context.close()
    tablet = browser.new_context(viewport={"width": 820, "height": 1180})
    page = tablet.new_page()
    sign_in(page, url, ADMIN_TOKEN, "/ui/channels/web")
    shot("channel-tablet")
    tablet.close()
    return taken


def main() -> int:
    with planner_service() as server, chromium() as browser:
        for path in take_screenshots(server, browser):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
