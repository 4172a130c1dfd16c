"""Logging with the request's correlation id on every line, as text or JSON.

`configure(level, fmt)` sets the root handler of the process (uvicorn's own loggers
propagate to it): `fmt="text"` gives `time LEVEL logger [correlation id] message`;
`fmt="json"` (ATP_LOG_FORMAT=json) one JSON object per line with `time`, `level`, `logger`,
`correlation_id`, `message` and the record's extra fields (a request line adds `method`,
`route`, `status`, `duration_ms`).
"""

from __future__ import annotations

import contextvars
import logging

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")

LOG_FORMATS = ("text", "json")


class CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        return True


def configure(level: str, fmt: str = "text") -> None:
    """Send every log record of the process to stderr in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(correlation_id)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI copy
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's loggers write through the root handler, in the same format.
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The request line is atp's own (api.http.metrics), with the route and correlation id.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
