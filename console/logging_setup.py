"""Logging for each run mode: stderr for services, a file while the TUI owns the screen."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from pathlib import Path

from backend.config import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure(settings: Settings, *, to_file: bool, level: int = logging.INFO) -> Path | None:
    """Route logs to stderr (services) or to LOCKER_DATA_DIR/locker-console.log (TUI),
    rotated and bounded so a long-running console never fills the disk."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    path: Path | None = None
    handler: logging.Handler
    if to_file:
        settings.locker_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = settings.locker_data_dir / "locker-console.log"
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=10_000_000, backupCount=3)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    for noisy in ("amqtt", "transitions", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
