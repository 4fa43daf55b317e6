"""Keep the hook secret and provisioning tokens out of the logs of amqtt and aiohttp.

The HTTP auth plugins carry `?mosq_secret=...` in their URIs. amqtt 0.12.1 does not log
those URIs itself, but an aiohttp error or a traceback may name a URL, so every record
from the loggers that could see one passes through `SecretRedactingFilter`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_SECRET_RE = re.compile(r"(mosq_secret=)[^&\s'\"<>]+")
_TOKEN_RE = re.compile(r"(locker/register/)[^/\s'\"<>]+")
REDACTED = "<redacted>"

#: Loggers whose records may carry a hook URL or a topic with a provisioning token.
DEFAULT_LOGGERS: tuple[str, ...] = (
    "amqtt",
    "amqtt.broker",
    "amqtt.broker.plugins",
    "amqtt.contrib.http",
    "amqtt.contrib.persistence",
    "amqtt.mqtt.protocol.handler",
    "amqtt.mqtt.protocol.broker_handler",
    "amqtt.session",
    "asyncio",
    "aiohttp.client",
    "backend.broker",
)


def redact_text(text: str) -> str:
    """Replace the value of every `mosq_secret=` and every provisioning token in `text`."""
    text = _SECRET_RE.sub(rf"\1{REDACTED}", text)
    return _TOKEN_RE.sub(rf"\1{REDACTED}", text)


class SecretRedactingFilter(logging.Filter):
    """Rewrite a record's message and traceback text with secrets redacted; never drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave the record to the handler
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


_FILTER = SecretRedactingFilter()


def install_redaction(extra: Iterable[str] = ()) -> None:
    """Attach the filter to the known loggers and every existing `amqtt.*` logger (idempotent).

    Filters on a logger only see records logged on that very logger, hence the explicit list
    plus a sweep over the loggers amqtt has created by now (plugin child loggers included).
    """
    names = set(DEFAULT_LOGGERS) | set(extra)
    names |= {
        name
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith(("amqtt.", "backend.broker."))
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
