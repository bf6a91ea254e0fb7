"""The demo shop's in-memory state: catalogue, stock and recent orders, safe to share between threads.

Each process keeps its own shop (gunicorn workers do not share stock), which is fine for a demo whose
purpose is to produce realistic traffic, not to sell keyboards.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

MAX_QUANTITY: Final = 10

# A delivery arrives each time a product runs out, so the demo keeps selling forever. With the load
# scenarios' purchases of 1-3 units (2 on average), a delivery of 10-26 units (18 on average) lasts
# about nine purchases, so roughly one purchase in ten meets an empty shelf and is answered 409.
RESTOCK_UNITS: Final = (10, 26)

RECENT_ORDERS: Final = 100


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    name: str
    category: str
    price_cents: int
    rating: float


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    product_id: int
    product_name: str
    quantity: int
    total_cents: int
    created_unix: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "product_id": self.product_id,
            "product_name": self.product_name,
            "quantity": self.quantity,
            "total": self.total_cents / 100,
            "created_unix": self.created_unix,
        }


class UnknownProductError(LookupError):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"no product with id {product_id}")
        self.product_id = product_id


class OutOfStockError(Exception):
    def __init__(self, product_id: int, requested: int, available: int) -> None:
        super().__init__(f"product {product_id}: {requested} requested, {available} in stock")
        self.product_id = product_id
        self.requested = requested
        self.available = available


CATALOGUE: Final = (
    Product(1, "Mechanical keyboard", "peripherals", 8999, 4.6),
    Product(2, "Wireless mouse", "peripherals", 2999, 4.3),
    Product(3, "USB-C hub", "accessories", 3999, 4.1),
    Product(4, '27" monitor', "displays", 27999, 4.7),
    Product(5, "Laptop stand", "accessories", 4599, 4.4),
    Product(6, "Noise-cancelling headphones", "audio", 19999, 4.8),
    Product(7, "HD webcam", "peripherals", 6999, 3.9),
    Product(8, "Desk lamp", "furniture", 3499, 4.2),
)


class Shop:
    """Catalogue, stock and the most recent orders behind one lock."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._products = {product.id: product for product in CATALOGUE}
        self._stock = {product.id: self._rng.randint(*RESTOCK_UNITS) for product in CATALOGUE}
        self._orders: deque[Order] = deque(maxlen=RECENT_ORDERS)
        self._orders_placed = 0

    def _as_json(self, product: Product) -> dict[str, Any]:
        return {
            "id": product.id,
            "name": product.name,
            "category": product.category,
            "price": product.price_cents / 100,
            "rating": product.rating,
            "stock": self._stock[product.id],
        }

    def list_products(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._as_json(product) for product in self._products.values()]

    def get_product(self, product_id: int) -> dict[str, Any]:
        with self._lock:
            product = self._products.get(product_id)
            if product is None:
                raise UnknownProductError(product_id)
            return self._as_json(product)

    def featured(self, count: int = 3) -> list[dict[str, Any]]:
        with self._lock:
            best = sorted(self._products.values(), key=lambda product: product.rating, reverse=True)
            return [self._as_json(product) for product in best[:count]]

    def purchase(self, product_id: int, quantity: int) -> tuple[Order, int]:
        """Take ``quantity`` units off the shelf; returns the order and the stock left.

        An empty shelf raises :class:`OutOfStockError` and triggers a delivery, so a later purchase
        succeeds again.
        """
        with self._lock:
            product = self._products.get(product_id)
            if product is None:
                raise UnknownProductError(product_id)
            available = self._stock[product_id]
            if quantity > available:
                self._stock[product_id] = available + self._rng.randint(*RESTOCK_UNITS)
                raise OutOfStockError(product_id, quantity, available)
            self._stock[product_id] = available - quantity
            self._orders_placed += 1
            order = Order(
                id=self._orders_placed,
                product_id=product_id,
                product_name=product.name,
                quantity=quantity,
                total_cents=product.price_cents * quantity,
                created_unix=time.time(),
            )
            self._orders.appendleft(order)
            return order, self._stock[product_id]

    def recent_orders(self) -> tuple[list[Order], int]:
        """The newest orders first (at most ``RECENT_ORDERS``) and how many were placed in all."""
        with self._lock:
            return list(self._orders), self._orders_placed
