"""Settings: one struct read once from ATP_* environment variables."""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Annotated, Literal

import msgspec

SECRET_FILE = "secret.key"
"""The key embedded mode generates into ATP_DATA_DIR when ATP_SECRET_KEY is unset."""
MIN_SECRET_LENGTH = 32


class SecretKeyMissing(RuntimeError):
    """The server needs a secret key and has none (or only a weak one): it must not start."""


class SettingsError(ValueError):
    """An ATP_* variable holds a value of the wrong kind; the message names the variable."""


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
    db_pool_size: Annotated[int, msgspec.Meta(ge=1)] = 5
    """ATP_DB_POOL_SIZE: PostgreSQL connections per process."""
    db_connect_timeout: Annotated[int, msgspec.Meta(ge=1)] = 2
    """ATP_DB_CONNECT_TIMEOUT: seconds to wait for a database connection before answering
    503."""
    read_wait: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """ATP_READ_WAIT: how long a read with `min_position` waits for the read model (then 409)."""
    push_alert_seconds: float = 300.0
    """ATP_PUSH_ALERT_SECONDS: /ready flags (and the log warns about) a channel whose
    pusher holds a change older than this."""
    drift_alert_units: Annotated[int, msgspec.Meta(ge=0)] = 0
    """ATP_DRIFT_ALERT_UNITS: a reconciliation that finds more units of drift than this
    logs a warning (0: never)."""
    amqp_url: str | None = None
    """ATP_AMQP_URL: RabbitMQ (unset: in-process bus)."""
    admin_token: str | None = None
    """ATP_ADMIN_TOKEN: accepted as an admin token, so a fresh install can create tokens."""
    secret_key: str = ""
    """ATP_SECRET_KEY: the server's secret (at least 32 characters): it encrypts what the
    ledger must keep secret. Required with ATP_DATABASE_URL; embedded mode generates one into
    ATP_DATA_DIR/secret.key (mode 0600) when unset."""
    unknown_token_rate: float = 10.0
    """ATP_UNKNOWN_TOKEN_RATE: unknown bearer tokens answered per second per client address
    and API process (burst: five seconds' worth); past it, 429 with Retry-After. 0: no limit."""
    host: str = "127.0.0.1"
    """ATP_HOST."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    """ATP_PORT."""
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
    """ATP_WORKERS: API worker processes for `atp serve`."""
    writer_socket: str | None = None
    """ATP_WRITER_SOCKET: set by `atp serve` for its workers when there are several: the Unix
    socket of the one worker that decides every /v1 write (api.http.forwarding)."""
    sweep_interval: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """ATP_SWEEP_INTERVAL: seconds between expiry sweeps run inside `atp serve`
    (0 disables; then run `atp sweep`)."""
    order_poll_seconds: float = 60.0
    """ATP_ORDER_POLL_SECONDS: seconds between catch-up polls of the WooCommerce stores'
    orders (WooCommerce never retries a webhook), run by `atp webhooks`, or by `atp serve`
    without RabbitMQ; 0 disables."""
    log_level: str = "info"
    """ATP_LOG_LEVEL."""
    log_format: Literal["text", "json"] = "text"
    """ATP_LOG_FORMAT: `json` writes one JSON object per log line."""

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def token_secret(self) -> bytes:
        """The server's secret key (bytes), never derived from anything public.

        ATP_SECRET_KEY if set; else, in embedded mode only, a random key generated once into
        ATP_DATA_DIR/secret.key (mode 0600) and reused by every later start. Raises
        SecretKeyMissing (a one-line message for the operator) when ATP_DATABASE_URL is set
        without a key, or when the key is shorter than 32 characters.
        """
        if self.secret_key:
            if len(self.secret_key) < MIN_SECRET_LENGTH:
                raise SecretKeyMissing(
                    f"ATP_SECRET_KEY is too short ({len(self.secret_key)} characters; at least "
                    f"{MIN_SECRET_LENGTH}): {GENERATE_HINT}"
                )
            return self.secret_key.encode()
        if not self.embedded:
            raise SecretKeyMissing(
                f"ATP_SECRET_KEY is not set and ATP_DATABASE_URL is: set it to {GENERATE_HINT}"
            )
        return _embedded_secret(str(Path(self.data_dir).resolve()))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read every `ATP_<FIELD>` variable (empty counts as unset). Raises SettingsError
        naming the variable when one does not convert (e.g. ATP_PORT=abc)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.__struct_fields__:
            raw = env.get(f"ATP_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            found = re.search(r"at `\$\.(\w+)`", str(exc))
            if found is None:
                raise SettingsError(f"invalid settings: {exc}") from None
            field = found.group(1)
            reason = str(exc).split(" - at ")[0].split(", got ")[0].replace("Expected", "expected")
            raise SettingsError(
                f"ATP_{field.upper()}={values.get(field)!r} is not valid: {reason}"
            ) from None
        if not isinstance(logging.getLevelName(settings.log_level.upper()), int):
            raise SettingsError(
                f"ATP_LOG_LEVEL={settings.log_level!r} is not valid: "
                "expected debug, info, warning, error or critical"
            )
        return settings


GENERATE_HINT = (
    "a random value shared by every atp process, e.g. "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


@functools.cache
def _embedded_secret(data_dir: str) -> bytes:
    """Read data_dir/secret.key, creating it (random, mode 0600) if absent.

    Concurrent first starts (several workers) agree: the file is created exclusively and a
    loser reads the winner's key.
    """
    path = Path(data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
    for _ in range(100):
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.01)  # another process created it and is writing it
    raise SecretKeyMissing(f"{path} is empty: delete it, or set ATP_SECRET_KEY")
