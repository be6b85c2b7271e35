"""Chromium, driven by Playwright: Debian's build (``apt-get install chromium``), or the one
named by ``TRE_CHROMIUM``. Pages are saved as screenshots under the test's folder, and into
``TRE_SCREENSHOTS_DIR`` when set (``make screenshots`` refreshes those of the docs)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("TRE_CHROMIUM") or shutil.which("chromium")
    if not executable:
        pytest.skip("no Chromium: run `make setup` as root, or `apt-get install chromium`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshot(tmp_path):
    """Save the page as ``<name>.png`` (and into TRE_SCREENSHOTS_DIR when set)."""
    wanted = os.environ.get("TRE_SCREENSHOTS_DIR")

    def take(page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if wanted:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(wanted) / path.name)
        return path

    return take


def log_in(chromium, portal, username: str):
    """A new browser context logged in to the portal as ``username`` through Keycloak's page."""
    context = chromium.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{portal.url}/login")
    page.fill("#username", username)
    page.fill("#password", portal.keycloak.settings.demo_password)
    page.click("#kc-login")
    page.wait_for_url(re.compile(re.escape(portal.url) + r"/?$"))
    assert username in page.inner_text("header")
    return page
