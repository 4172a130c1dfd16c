"""Settings: one struct read once from ATP_* environment variables."""

from __future__ import annotations

import hashlib
import os

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    """ATP_DATABASE_URL: postgresql://... for the PostgreSQL ledger; unset: embedded SQLite."""
    data_dir: str = "./.atp"
    """ATP_DATA_DIR: where the embedded SQLite ledger lives."""
    redis_url: str | None = None
    """ATP_REDIS_URL: the Redis read model (unset: in-process)."""
    redis_prefix: str = "atp"
    """ATP_REDIS_PREFIX: the first part of every read-model key."""
    redis_rebuild_db: int | None = None
    """ATP_REDIS_REBUILD_DB: the Redis database `atp project --rebuild` builds into before it
    swaps it with the live one (default: the live database number + 1)."""
    read_wait: float = 1.0
    """ATP_READ_WAIT: how long a read with `min_position` waits for the read model (then 409)."""
    push_alert_seconds: float = 300.0
    """ATP_PUSH_ALERT_SECONDS: /ready flags (and the log warns about) a channel whose
    pusher holds a change older than this."""
    amqp_url: str | None = None
    """ATP_AMQP_URL: RabbitMQ (unset: in-process bus)."""
    admin_token: str | None = None
    """ATP_ADMIN_TOKEN: accepted as an admin token, so a fresh install can create tokens."""
    secret_key: str = ""
    """ATP_SECRET_KEY: derives idempotently issued tokens; defaults to a hash of the admin
    token. Set it in production."""
    host: str = "127.0.0.1"
    """ATP_HOST."""
    port: int = 8000
    """ATP_PORT."""
    workers: int = 1
    """ATP_WORKERS: API worker processes for `atp serve`."""
    sweep_interval: float = 1.0
    """ATP_SWEEP_INTERVAL: seconds between expiry sweeps run inside `atp serve`
    (0 disables; then run `atp sweep`)."""
    order_poll_seconds: float = 60.0
    """ATP_ORDER_POLL_SECONDS: seconds between catch-up polls of the WooCommerce stores'
    orders (WooCommerce never retries a webhook), run by `atp webhooks`, or by `atp serve`
    without RabbitMQ; 0 disables."""
    log_level: str = "info"
    """ATP_LOG_LEVEL."""

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def token_secret(self) -> bytes:
        if self.secret_key:
            return self.secret_key.encode()
        return hashlib.sha256(b"atp-secret:" + (self.admin_token or "").encode()).digest()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.__struct_fields__:
            raw = env.get(f"ATP_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return msgspec.convert(values, cls, strict=False)
