"""``python -m tests.e2e.screenshots``: the console's screenshots in docs/img/, from the example app.

It runs the example in debug (the console on) with a real worker on Redis, sends it traffic for
four minutes (clicks, purchases, some with the coupon ``EXPIRED``, whose handler
fails until it is dead-lettered, sign-ups), then photographs each page of the console with
Debian's Chromium. Run it again when the pages change; the images are committed.

    .venv/bin/python -m tests.e2e.screenshots [--seconds 240]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import redis
from flask.testing import FlaskClient

from tests.conftest import REDIS_URL, ROOT, wait_for
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, serve
from tests.test_example_app import forget_redis_example, redis_settings, running_example

OUT = ROOT / "docs" / "img"
PAGES = {
    "overview": "/eventlib/?minutes=10",
    "events": "/eventlib/events",
    "deadletters": "/eventlib/deadletters",
}


def traffic(client: FlaskClient, seconds: float) -> list[str]:
    """Requests to the example for ``seconds``, at a rate that rises and falls; the purchase ids."""
    rng = random.Random(7)
    bought = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        burst = 1 + int(6 * (1 + math.sin(elapsed / 9)))
        for _ in range(burst):
            deal = rng.choice([7, 7, 7, 42, 99])
            client.post(f"/deals/{deal}/click")
        if rng.random() < 0.35:
            coupon = "EXPIRED" if rng.random() < 0.3 else rng.choice(["SPRING", ""])
            form = {"amount": "19.90", "coupon": coupon}
            response = client.post(f"/deals/{rng.choice([7, 42])}/buy", data=form)
            bought.append(response.headers.get("X-Event-Id", ""))
        if rng.random() < 0.1:
            client.post("/accounts/signup", data={"email": f"ada{rng.randrange(10**6)}@example.com"})
        time.sleep(0.25)  # the pace of the traffic, not a wait for work
    return bought


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.screenshots", description=__doc__)
    parser.add_argument("--seconds", type=float, default=240.0, help="how long to send traffic first")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    client = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="eventlib-screenshots-") as tmp:
        folder = Path(tmp)
        settings = {**redis_settings(folder / "instance", "screenshots"), "DEBUG": "true"}
        try:
            with running_example(settings, folder / "worker.log") as example:
                url, stop = serve(example.app)
                try:
                    print(f"[screenshots] sending traffic for {args.seconds:.0f} s to {url}", file=sys.stderr)
                    traffic(example.app.test_client(), args.seconds)
                    # The EXPIRED coupons' last retries end in dead letters: photograph once one is there.
                    store = example.app.extensions["eventlib"].store
                    wait_for(lambda: store.dead_letters(), timeout=120, what="a dead letter to photograph")
                    OUT.mkdir(parents=True, exist_ok=True)
                    with sync_playwright() as playwright:
                        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                        page = browser.new_page(viewport={"width": 1280, "height": 900})
                        for name, path in PAGES.items():
                            page.goto(url + path)
                            page.screenshot(path=str(OUT / f"console-{name}.png"), full_page=name != "events")
                        page.goto(url + "/eventlib/deadletters")
                        page.locator("#groups a").first.click()
                        page.locator("[data-letter] a").first.click()
                        page.screenshot(path=str(OUT / "console-deadletter.png"), full_page=True)
                        event_id = page.locator("dl.facts a.mono").first.inner_text()
                        page.goto(f"{url}/eventlib/event?id={event_id}")
                        page.screenshot(path=str(OUT / "console-event.png"), full_page=True)
                        browser.close()
                finally:
                    stop()
        finally:
            forget_redis_example(client, settings)
    for image in sorted(OUT.glob("console-*.png")):
        print(f"[screenshots] {image.relative_to(ROOT)} ({image.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
