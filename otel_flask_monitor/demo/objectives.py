"""The shop demo's objectives (SLOs), and so the Prometheus rules of the compose stack.

The monitor counts requests against them, and the rules of the compose stack
(deploy/prometheus/rules/shop-objectives.rules.yml) are generated from them:

- every route: 99.5 % of requests without a server error;
- the product list: 99 % within 300 ms;
- a purchase: 99.9 % without a server error (money is involved);
- the featured products: 95 % within 400 ms. Its simulated downstream call takes 100-500 ms, so about
  a quarter of its requests miss: under Locust this objective burns its budget at about 5x, enough
  for a ticket, on purpose, so the dashboards and alerts have something to show;
- ``/simulate-error`` fails by design: no availability objective.
"""

from __future__ import annotations

from typing import Any, Final

SHOP_OBJECTIVES: Final[dict[str, dict[str, Any]]] = {
    "default": {"availability": 99.5},
    "GET /api/products": {"latency": {"threshold_ms": 300, "target": 99}},
    "GET /api/products/featured": {"latency": {"threshold_ms": 400, "target": 95}},
    "POST /api/products/<int:product_id>/purchase": {"availability": 99.9},
    "/simulate-error": {"availability": None},
}
