"""The JS client in headless Chromium, against a real server, a real Celery worker and Redis."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import Site, Tab

pytestmark = pytest.mark.worker

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def open_page(tab: Tab, site: Site, token: str) -> Any:
    page = tab.page
    page.goto(site.page_url(token))
    assert page.evaluate("typeof yipit.event.log") == "function"
    return page


def log_requests(page: Any) -> list[Any]:
    """The requests the page makes to the endpoint, as Playwright sees them, from now on."""
    seen: list[Any] = []
    page.on("request", lambda request: request.url.endswith("/event/log") and seen.append(request))
    return seen


def wait_searches(site: Site, token: str, count: int = 1) -> list[dict[str, Any]]:
    return wait_for(
        lambda: len(site.searches(token)) >= count and site.searches(token),
        timeout=30,
        what=f"{count} web.Search records for {token}",
    )


def test_a_click_in_the_page_runs_the_handler_in_the_worker(tab: Tab, site: Site, token: str) -> None:
    page = open_page(tab, site, token)
    page.click("#search")
    (record,) = wait_searches(site, token)
    assert record["handler"] == "Search.store"
    assert record["data"] == {"query": repr(token), "page": "'click'"}
    assert UUID.fullmatch(record["id"])
    assert record["context"]["user_agent"].startswith("'Mozilla/5.0")  # set by the server
    assert tab.page_errors() == []


def test_25_calls_in_one_tick_arrive_in_one_request(tab: Tab, site: Site, token: str) -> None:
    page = open_page(tab, site, token)
    requests = log_requests(page)
    results = page.evaluate(
        """token => Promise.all(Array.from({length: 25}, (_, i) =>
            yipit.event.log('web.Search', {query: token, page: i})))""",
        token,
    )
    assert [(r["ok"], r["status"]) for r in results] == [(True, 202)] * 25
    assert len(requests) == 1
    request = requests[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "text/plain;charset=UTF-8"  # CORS-safe: no preflight
    sent = request.post_data_json["events"]
    assert [event["id"] for event in sent] == [r["id"] for r in results]
    records = wait_searches(site, token, 25)
    assert sorted(r["data"]["page"] for r in records) == sorted(repr(i) for i in range(25))
    assert {r["id"] for r in records} == {r["id"] for r in results}
    assert tab.page_errors() == []


def test_an_event_logged_right_before_navigation_arrives(tab: Tab, site: Site, token: str) -> None:
    page = open_page(tab, site, token)
    page.click("#away")  # its onclick logs the event, then the link navigates at once
    page.wait_for_selector("#landed")
    (record,) = wait_searches(site, token)
    assert record["data"]["page"] == "'before-navigation'"


@pytest.mark.parametrize("client_listening", [False, True], ids=["first-event", "client-listening"])
@pytest.mark.parametrize("leave", ["navigate", "close"])
def test_an_event_logged_in_a_pagehide_handler_arrives(
    tab: Tab, site: Site, token: str, leave: str, client_listening: bool
) -> None:
    """A "page leave" event, logged when no timer will fire again.

    The client listens for pagehide from its first call: with ``client-listening`` its own handler
    runs first and the page's event goes as a beacon; otherwise as a keepalive fetch.
    """
    page = open_page(tab, site, token)
    if client_listening:
        assert page.evaluate("yipit.event.log('web.Search', {query: window.token, page: 'earlier'})")["ok"]
    page.evaluate(
        """() => addEventListener('pagehide', () => {
            yipit.event.log('web.Search', {query: window.token, page: 'leave'})
        })"""
    )
    if leave == "navigate":
        page.goto(f"{site.url}/e2e/landing")
    else:
        page.close()
    records = wait_searches(site, token, 2 if client_listening else 1)
    assert "'leave'" in [r["data"]["page"] for r in records]
    (leave_id,) = [r["id"] for r in records if r["data"]["page"] == "'leave'"]
    # A beacon is a no-cors request; fetch() is a cors one (same-origin here, so no preflight).
    modes = [headers.get("Sec-Fetch-Mode") for headers, body in site.requests if leave_id.encode() in body]
    assert modes == ["no-cors" if client_listening else "cors"]


def test_rejected_events_resolve_with_the_server_errors_and_leave_no_error_in_the_page(
    tab: Tab, site: Site, token: str
) -> None:
    page = open_page(tab, site, token)
    batch = page.evaluate(
        """token => Promise.all([
            yipit.event.log('web.Rating', {stars: 9}),
            yipit.event.log('web.Internal', {}),
            yipit.event.log('web.Nope', {}),
            yipit.event.log('web.Search', {query: token, page: 'valid neighbour'}),
        ])""",
        token,
    )
    invalid, private, unknown, valid = batch
    assert (invalid["ok"], invalid["status"], invalid["error"]["code"]) == (False, 202, "validation_error")
    assert invalid["error"]["details"] == {"stars": ["Must be greater than or equal to 1 and less than or equal to 5."]}
    assert invalid["error"]["index"] == 0 and invalid["error"]["event"] == "web.Rating"
    assert (private["ok"], private["error"]["code"]) == (False, "private_event")
    assert (unknown["ok"], unknown["error"]["code"]) == (False, "unknown_event")
    assert valid == {"ok": True, "id": valid["id"], "status": 202}
    # A request refused as a whole (every event of it invalid): a 400, not retried.
    requests = log_requests(page)
    alone = page.evaluate("yipit.event.log('web.Search', {page: 'no query'})")
    assert alone["ok"] is False and alone["status"] == 400 and alone["error"]["code"] == "validation_error"
    wait_searches(site, token)
    assert len(requests) == 1
    assert tab.page_errors() == []
    records = site.records.all()
    assert not [r for r in records if r["id"] in (invalid["id"], private["id"], unknown["id"], alone["id"])]


def test_a_network_error_and_a_5xx_are_retried_with_the_same_id_and_handlers_run_once(
    tab: Tab, site: Site, token: str
) -> None:
    """The first attempt never reaches the server; the second does, but its answer is lost (503)."""
    page = open_page(tab, site, token)
    attempts: list[str] = []

    def flaky(route: Any) -> None:
        attempts.append(route.request.post_data)
        if len(attempts) == 1:
            route.abort("connectionreset")
        elif len(attempts) == 2:
            route.fetch()  # the server logs the event ...
            wait_searches(site, token)  # ... and the worker runs its handler,
            route.fulfill(status=503, json={"accepted": [], "errors": []})  # but the page sees a 503
        else:
            route.continue_()

    done_before = site.tasks_done()
    page.route("**/event/log", flaky)
    result = page.evaluate("yipit.event.log('web.Search', {query: window.token, page: 'retried'})")
    assert result["ok"] is True and result["status"] == 202
    assert len(attempts) == 3 and len(set(attempts)) == 1, "every attempt sends the same body, id included"
    # Both deliveries reached the worker; the second one ran nothing (dedup by the client's id).
    wait_for(lambda: site.tasks_done() >= done_before + 2, what="the worker to process both deliveries")
    records = site.searches(token)
    assert [r["id"] for r in records] == [result["id"]]
    assert tab.page_errors() == []


def test_without_crypto_random_uuid_ids_are_still_uuids_the_server_accepts(tab: Tab, site: Site, token: str) -> None:
    """Pages served over plain http (not localhost) have no crypto.randomUUID()."""
    tab.page.add_init_script("delete Crypto.prototype.randomUUID")
    page = open_page(tab, site, token)
    assert page.evaluate("typeof crypto.randomUUID") == "undefined"
    results = page.evaluate(
        "token => Promise.all([1, 2].map(i => yipit.event.log('web.Search', {query: token, page: i})))", token
    )
    assert all(r["ok"] and UUID.fullmatch(r["id"]) for r in results)
    assert results[0]["id"] != results[1]["id"]
    assert {r["id"] for r in wait_searches(site, token, 2)} == {r["id"] for r in results}


def test_the_script_is_served_with_caching_headers(tab: Tab, site: Site, token: str) -> None:
    page = tab.page
    responses: list[Any] = []
    page.on("response", lambda response: "/eventlib.js" in response.url and responses.append(response))
    open_page(tab, site, token)
    (response,) = responses
    assert re.search(r"/event/eventlib\.js\?v=[0-9a-f]{16}$", response.url)
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"].startswith("text/javascript")
