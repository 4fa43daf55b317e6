"""Starting an aiohttp site with a clear error when its address cannot be had."""

from __future__ import annotations

import errno
from collections.abc import Callable

from aiohttp import web


async def start_site(
    runner: web.BaseRunner,
    site: web.BaseSite,
    *,
    in_use: Callable[[], Exception],
    cannot: Callable[[OSError], Exception],
) -> None:
    """Start `site`; when it cannot listen the runner is cleaned up and `in_use()` (the
    port is taken) or `cannot(exc)` (any other OSError) is raised instead."""
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise in_use() from None
        raise cannot(exc) from None
