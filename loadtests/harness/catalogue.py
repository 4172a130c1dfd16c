"""The read benchmarks' catalogue: locations, channels and SKU codes seeded through the API."""

from __future__ import annotations

LOCATIONS = ("BR-WH1", "BR-WH2", "BR-ST1")
CHANNELS = {
    "BR-WEB": {"locations": list(LOCATIONS), "buffer": 0, "low_stock_threshold": 5},
    "BR-MKT": {"locations": list(LOCATIONS[:2]), "buffer": 1, "share_percent": 60},
}
CHANNEL = "BR-WEB"
"""The channel every read asks for."""
BULK = 100
RECEIPT_LINES = 100
TARGET_RATIO = 0.8
TARGET_REDIS_P99_MS = 1.0
TARGET_LAG_P99_MS = 50.0


def sku_code(i: int) -> str:
    return f"R-{i:05d}"
