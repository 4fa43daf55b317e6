"""The one redactor: what never reaches a log, an error message or a stored row.

* the value of every ``mosq_secret=`` (the hook secret travels in the hook URLs' query),
  up to the next ``&`` or whitespace;
* every provisioning token: whatever follows ``locker/register/`` anywhere in the text
  (a topic, a URL, a ``repr`` in a traceback), all of its levels, up to whitespace, a
  quote or an angle bracket.

Everything else is kept. `redact` serves the listener's rejected topics, the hook's log
fields and access log, and the embedded broker's errors; `SecretRedactingFilter` applies
it to every record of the loggers that could see a secret (message and traceback). The
amqtt HTTP auth plugins carry the secret in their URIs; amqtt 0.12.1 does not log them,
but an aiohttp error or a traceback may name a URL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

from backend.domain.topics import REGISTER_PREFIX

__all__ = ["REDACTED", "SecretRedactingFilter", "install_redaction", "redact", "redact_loggers"]

REDACTED: Final = "<redacted>"
SECRET_PARAM: Final = "mosq_secret"
_SECRET_RE: Final = re.compile(rf"({SECRET_PARAM}=)[^&\s]+")
_TOKEN_RE: Final = re.compile(rf"({re.escape(REGISTER_PREFIX)})[^\s'\"<>]+")

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


def redact(text: str) -> str:
    """`text` with every hook secret and provisioning token replaced by ``<redacted>``."""
    if SECRET_PARAM in text:
        text = _SECRET_RE.sub(rf"\1{REDACTED}", text)
    if REGISTER_PREFIX in text:
        text = _TOKEN_RE.sub(rf"\1{REDACTED}", text)
    return text


class SecretRedactingFilter(logging.Filter):
    """Rewrite a record's message and traceback text with secrets redacted; never drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave the record to the handler
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
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
    redact_loggers(names)


def redact_loggers(names: Iterable[str]) -> None:
    """Attach the filter to the loggers named (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
