"""Fakes of the systems atp talks to, as real HTTP servers on 127.0.0.1 for tests.

    from tests.support.fakes import FakeWooCommerce, FakeAmazon, FakeEbay

    with FakeWooCommerce(webhook_url=receiver_url) as wc:
        pid = wc.add_product("SKU-1", stock=5)
        ...  # point atp at wc.url
        assert wc.stock_of("SKU-1") == 3
        wc.faults.throttle_next(2, retry_after=1, html=True)

Every fake: starts on a free port (`.url`), is a context manager (or `start()`/`stop()`),
keeps a request log (`requests()`, `request_count()`, `status_counts()`), and has the same
runtime fault knobs under `.faults` (see `base.Faults`): `throttle_next`, `fail_next`,
`disconnect_next`, `latency`, `set_rate_limit`, `clear`; plus `make_unknown`/`make_known`
for ids (WooCommerce) or SKUs (Amazon, eBay). All of it is thread-safe.
"""

from tests.support.fakes.amazon import FakeAmazon
from tests.support.fakes.base import FakeServer, Fault, Faults, RecordedRequest, Response
from tests.support.fakes.ebay import FakeEbay
from tests.support.fakes.woocommerce import (
    FakeWooCommerce,
    StockWrite,
    WebhookDelivery,
    oauth1_signature,
    webhook_signature,
    wp_json_encode,
)

__all__ = [
    "FakeAmazon",
    "FakeEbay",
    "FakeServer",
    "FakeWooCommerce",
    "Fault",
    "Faults",
    "RecordedRequest",
    "Response",
    "StockWrite",
    "WebhookDelivery",
    "oauth1_signature",
    "webhook_signature",
    "wp_json_encode",
]
