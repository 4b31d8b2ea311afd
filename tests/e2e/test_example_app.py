"""The example app clicked through in headless Chromium: its pages log events with the JS client,
a real Celery worker (Redis as the broker) runs the handlers, and the dashboard shows their counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from playwright.sync_api import expect

from tests.conftest import wait_for
from tests.e2e.conftest import STEP_TIMEOUT_MS, Tab, serve
from tests.test_example_app import forget_redis_example, redis_settings, running_example

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def example_url(redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example app served over HTTP, its worker on Redis, counting in Redis too."""
    folder = tmp_path_factory.mktemp("e2e-example")
    settings = redis_settings(folder / "instance", "example-e2e")
    try:
        with running_example(settings, folder / "worker.log") as example:
            url, stop = serve(example.app)
            try:
                yield url
            finally:
                stop()
    finally:
        forget_redis_example(redis_client, settings)


def requests_made(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(f"{request.method} {request.url}"))
    return seen


def test_a_deal_click_is_logged_from_the_browser_and_counted_on_the_dashboard(tab: Tab, example_url: str) -> None:
    page = tab.page
    page.goto(f"{example_url}/")
    requests = requests_made(page)
    deal = page.locator("form.click[data-deal-id='7']")
    deal.get_by_role("button", name="Click").click()
    expect(deal.locator("output")).to_have_text("logged", timeout=STEP_TIMEOUT_MS)
    assert f"POST {example_url}/event/log" in requests
    assert f"POST {example_url}/deals/7/click" not in requests  # the JS client, not the form
    assert page.url == f"{example_url}/"

    page.locator("nav").get_by_role("link", name="Dashboard").click()
    # The method handler counted it in SQLite, a function handler in Redis; the page follows.
    expect(page.locator("[data-count='clicks.7']")).to_have_text("1", timeout=30_000)
    expect(page.locator("[data-count='redis_clicks.7']")).to_have_text("1", timeout=30_000)
    expect(page.locator("[data-count='clicks.42']")).to_have_text("0")
    assert tab.page_errors() == []


def test_the_signup_form_shows_the_server_validation_error_then_signs_up(tab: Tab, example_url: str) -> None:
    page = tab.page
    page.goto(f"{example_url}/accounts/signup")
    email = page.get_by_label("Email")
    email.fill("ada@")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#signup-error")).to_have_text("'ada@' is not a valid email address.")
    assert page.url == f"{example_url}/accounts/signup"  # the page stayed: the error came back to it

    email.fill("  Ada@Example.com ")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{example_url}/dashboard")
    expect(page.locator("[data-count='signups']")).to_have_text("1", timeout=30_000)

    def journalled() -> bool:  # the "accounts.*" handler's row, cleaned by the event: reload to see it
        page.reload()
        return '{"email": "ada@example.com"}' in page.locator("table").last.inner_text()

    wait_for(journalled, timeout=30, interval=0.2, what="the sign-up in the latest events")
    assert tab.page_errors() == []


def test_the_example_pages_load_the_client(tab: Tab, example_url: str) -> None:
    for path in ("/", "/accounts/signup", "/dashboard"):
        tab.page.goto(f"{example_url}{path}")
        assert tab.page.evaluate("typeof yipit.event.log") == "function", path
    assert tab.page_errors() == []
