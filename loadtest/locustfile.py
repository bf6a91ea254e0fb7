"""Load scenarios for the shop demo (``python -m otel_flask_monitor.demo``).

    locust -f loadtest/locustfile.py --headless -u 10 -r 2 -t 60s --host http://127.0.0.1:5001
    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:5001 \
        HighLoadTester
    locust -f loadtest/locustfile.py --headless -u 5 -r 1 -t 30s --host http://127.0.0.1:5001 \
        InvalidRequestTester

Without class names only the mixed ``ShopUser`` runs (see ``run_only_the_mixed_user_by_default``).

What counts as a failure: every scenario checks each answer against what the demo is designed to
answer, so Locust's failure column shows only surprises.
- A 409 on a purchase is the shop running out of stock (about one purchase in ten): expected, success.
- The 500 of ``/simulate-error`` is the point of that route: expected, success, as long as it is the
  monitor's JSON answer carrying a trace id. A 500 anywhere else is a failure.
- In ``InvalidRequestTester`` the 404s and 400s it provokes are successes; a 2xx or a 5xx is not.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment

PRODUCT_IDS = range(1, 9)  # the demo's catalogue
UNKNOWN_PRODUCT_ID = 999
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

# Bodies the purchase route must refuse with 400, and the Content-Type each is sent with.
INVALID_PURCHASE_BODIES: tuple[tuple[str, str], ...] = (
    ("", "application/json"),  # no body
    ("{not json", "application/json"),  # malformed JSON
    ('["quantity", 1]', "application/json"),  # JSON, but not an object
    ("{}", "application/json"),  # quantity missing
    ('{"quantity": "two"}', "application/json"),
    ('{"quantity": 0}', "application/json"),
    ('{"quantity": -3}', "application/json"),
    ('{"quantity": 1000}', "application/json"),
    ("quantity=1", "application/x-www-form-urlencoded"),  # a form, not JSON
)


def expect_status(response: ResponseContextManager, *expected: int) -> None:
    """Mark the answer a success only when its status is one the scenario provoked on purpose."""
    wanted = " or ".join(str(status) for status in expected)
    if response.status_code in expected:
        response.success()
    elif response.status_code == 0:  # no HTTP answer at all: connection refused, reset, timeout
        response.failure(f"expected HTTP {wanted}, got no answer: {response.error}")
    else:
        response.failure(f"expected HTTP {wanted}, got {response.status_code}: {response.text[:200]!r}")


def expect_monitor_500(response: ResponseContextManager) -> None:
    """/simulate-error must end in the monitor's JSON 500 with the trace id, nothing else."""
    if response.status_code != 500:
        response.failure(f"expected HTTP 500, got {response.status_code}")
        return
    try:
        body: Any = response.json()
    except ValueError:
        response.failure(f"expected a JSON 500 body, got {response.text[:200]!r}")
        return
    trace_id = body.get("trace_id") if isinstance(body, dict) else None
    if isinstance(trace_id, str) and TRACE_ID.match(trace_id):
        response.success()
    else:
        response.failure(f"500 without a trace_id: {body!r}")


class ShopClient(HttpUser):
    """Requests every scenario shares; not a scenario itself."""

    abstract = True
    host = "http://127.0.0.1:5001"

    def list_products(self) -> None:
        with self.client.get("/api/products", catch_response=True) as response:
            expect_status(response, 200)

    def view_product(self) -> None:
        product_id = random.choice(PRODUCT_IDS)
        with self.client.get(
            f"/api/products/{product_id}", name="/api/products/[id]", catch_response=True
        ) as response:
            expect_status(response, 200)

    def purchase(self) -> None:
        product_id = random.choice(PRODUCT_IDS)
        with self.client.post(
            f"/api/products/{product_id}/purchase",
            json={"quantity": random.randint(1, 3)},
            name="/api/products/[id]/purchase",
            catch_response=True,
        ) as response:
            expect_status(response, 201, 409)  # 409: out of stock, which the demo does on purpose

    def featured(self) -> None:
        with self.client.get("/api/products/featured", catch_response=True) as response:
            expect_status(response, 200)

    def orders(self) -> None:
        with self.client.get("/api/orders", catch_response=True) as response:
            expect_status(response, 200)


class ShopUser(ShopClient):
    """The default mix: mostly browsing, some buying, a slow page now and then, a rare crash."""

    wait_time = between(0.5, 2.0)

    @task(10)
    def browse_products(self) -> None:
        self.list_products()

    @task(8)
    def view_one_product(self) -> None:
        self.view_product()

    @task(4)
    def buy(self) -> None:
        self.purchase()

    @task(2)
    def featured_products(self) -> None:
        self.featured()

    @task(2)
    def order_history(self) -> None:
        self.orders()

    @task(1)
    def trigger_error(self) -> None:
        with self.client.get("/simulate-error", catch_response=True) as response:
            expect_monitor_500(response)


class HighLoadTester(ShopClient):
    """Many requests with little think time: reads, purchases and the slow featured page."""

    wait_time = between(0.05, 0.2)

    @task(5)
    def browse_products(self) -> None:
        self.list_products()

    @task(3)
    def view_one_product(self) -> None:
        self.view_product()

    @task(3)
    def buy(self) -> None:
        self.purchase()

    @task(1)
    def featured_products(self) -> None:
        self.featured()


class InvalidRequestTester(ShopClient):
    """Requests the API must refuse; the refusals are successes, anything else a failure."""

    wait_time = between(0.2, 1.0)

    @task(3)
    def unknown_product(self) -> None:
        with self.client.get(f"/api/products/{UNKNOWN_PRODUCT_ID}", catch_response=True) as response:
            expect_status(response, 404)

    @task(2)
    def non_numeric_product_id(self) -> None:
        with self.client.get("/api/products/abc", catch_response=True) as response:
            expect_status(response, 404)

    @task(4)
    def invalid_purchase_body(self) -> None:
        body, content_type = random.choice(INVALID_PURCHASE_BODIES)
        with self.client.post(
            f"/api/products/{random.choice(PRODUCT_IDS)}/purchase",
            data=body,
            headers={"Content-Type": content_type},
            name="/api/products/[id]/purchase (invalid body)",
            catch_response=True,
        ) as response:
            expect_status(response, 400)

    @task(1)
    def purchase_unknown_product(self) -> None:
        with self.client.post(
            f"/api/products/{UNKNOWN_PRODUCT_ID}/purchase",
            data=json.dumps({"quantity": 1}),
            headers={"Content-Type": "application/json"},
            catch_response=True,
        ) as response:
            expect_status(response, 404)

    @task(2)
    def unknown_path(self) -> None:
        with self.client.get("/invalid/path", catch_response=True) as response:
            expect_status(response, 404)


@events.init.add_listener
def run_only_the_mixed_user_by_default(environment: Environment, **_: Any) -> None:
    """Locust runs every class in the file when none is named; the documented default is the mix.

    Naming classes on the command line (``HighLoadTester``) still selects exactly those.
    """
    options = environment.parsed_options
    if options is not None and not getattr(options, "user_classes", None):
        environment.user_classes[:] = [ShopUser]
