"""The whole product in a real browser (Debian's chromium driven by playwright), against
`manage.py serve` on the embedded default: the real worker, vector engine and local model.

Screenshots of the main pages land in test-artifacts/screenshots/ (docs/screenshots/ has
the chosen ones)."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    PARKING,
    REQUIRE_SERVICES,
    free_port,
    kb_serve,
)
from tests.files import make

SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"root": "root-pass-4821", "charlie": "charlie-pass-4821"}

pytestmark = pytest.mark.browser
if not Path(CHROMIUM).exists() and not REQUIRE_SERVICES:
    pytest.skip(
        "Debian's chromium is not installed (make test installs it)", allow_module_level=True
    )


def _manage(env: dict[str, str], *args: str, stdin: str = "") -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, input=stdin, text=True, check=True
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh kb on its own data folder: SQLite, embedded Qdrant, in-process worker and
    the bundled model, exactly as `make run` starts it."""
    data = tmp_path_factory.mktemp("kb-live")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS", "LLM_"))}
    env.pop("QDRANT_URL", None)
    env.update(KB_DATA_DIR=str(data), KB_LOCAL_LLM_PORT=str(free_port()))
    _manage(env, "migrate", "--verbosity", "0")
    _manage(env, "user_create", "root", "--superuser", "--password-stdin", stdin=PASSWORDS["root"])
    _manage(env, "user_create", "charlie", "--password-stdin", stdin=PASSWORDS["charlie"])
    process, url = kb_serve(env, data)
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def login(browser, url: str, username: str, **context: object):
    page = browser.new_context(**context).new_page()
    page.goto(f"{url}/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")
    return page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && !el.closest('template'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.name)"""


def test_upload_ask_cite_and_the_outsider_sees_nothing(server, browser, tmp_path):
    page = login(browser, server, "root", viewport={"width": 1280, "height": 860})
    assert page.evaluate(UNLABELLED) == []

    # Create a collection and upload three files of different formats.
    page.get_by_role("link", name="Collections").click()
    page.get_by_label("Slug").fill("handbook")
    page.get_by_label("Name").fill("Staff handbook")
    page.get_by_label("Description").fill("Policies for everyone")
    page.get_by_role("button", name="Create collection").click()
    page.wait_for_url(f"{server}/collections/handbook/")
    files = [
        make("txt", tmp_path, "parking.txt", text=PARKING),
        make("docx", tmp_path),
        make("html", tmp_path),
    ]
    page.set_input_files("#id_file", [str(f) for f in files])
    # Each file gets its row at once, then the table follows them to "ready".
    page.wait_for_function("document.querySelectorAll('#upload-list li').length === 3")
    page.wait_for_function(
        "document.querySelectorAll('#documents .status-ready').length === 3", timeout=240_000
    )
    # ... and so does each file's own line under the drop zone.
    page.wait_for_function(
        "[...document.querySelectorAll('#upload-list li')].every("
        "li => li.textContent.endsWith(': ready'))"
    )
    assert page.evaluate(UNLABELLED) == []
    shot(page, "collection")

    # Ask: the answer streams in, then cites the passage it came from.
    page.get_by_role("link", name="Ask this collection").click()
    page.get_by_label("Question").fill("When does the staff car park open?")
    page.get_by_role("button", name="Ask", exact=True).click()
    exchange = page.locator("#exchanges .exchange").last
    exchange.locator(".answer").filter(has_text="car park").wait_for(timeout=120_000)
    exchange.locator(".answer a.cite").first.wait_for(timeout=120_000)
    assert int(exchange.get_attribute("data-tokens") or 0) > 1  # it came word by word
    assert "car park" in exchange.locator(".sources").first.inner_text()
    # The conversation is saved after the answer ends; the sidebar then lists it once.
    page.wait_for_function("document.querySelector('#exchanges > :last-child').dataset.queryId")
    assert page.locator(".sidebar a", has_text="staff car park").count() == 1
    assert page.evaluate(UNLABELLED) == []
    shot(page, "ask")
    passage_url = exchange.locator(".answer a.cite").first.get_attribute("href")

    # Follow the citation: the passage is highlighted in its document.
    exchange.locator(".answer a.cite").first.click()
    highlighted = page.locator("mark#passage")
    highlighted.wait_for()
    assert "car park" in highlighted.inner_text()
    shot(page, "passage")

    # Search only: ranked passages with the terms marked.
    page.goto(f"{server}/search?q=car+park")
    assert page.locator("mark", has_text="park").count() > 0
    shot(page, "search")
    for name, path in (("audit", "/audit/"), ("status", "/status/"), ("tokens", "/tokens/")):
        page.goto(f"{server}{path}")
        assert page.evaluate(UNLABELLED) == []
        shot(page, name)
    page.goto(f"{server}/collections/handbook/members")
    shot(page, "members")

    # On a phone's width the ask page still works, one column.
    phone = login(browser, server, "root", viewport={"width": 390, "height": 844})
    phone.goto(f"{server}/conversations/1")
    shot(phone, "ask-phone")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390

    # charlie is no member: no collection, no passage, not even by typing the address.
    outsider = login(browser, server, "charlie", viewport={"width": 1280, "height": 860})
    assert "Staff handbook" not in outsider.content()
    outsider.goto(f"{server}/collections/")
    assert "Staff handbook" not in outsider.content()
    for path in ("/collections/handbook/", passage_url, "/audit/"):
        response = outsider.goto(f"{server}{path}")
        assert response is not None and response.status == 404, path
    outsider.goto(f"{server}/search?q=car+park")
    assert "car park" not in outsider.locator("main").inner_text()
