"""JSON 404 and 405 answers for requests no route takes, without a middleware.

aiohttp answers an unrouted request itself (plain text) unless a middleware turns its
``HTTPNotFound`` / ``HTTPMethodNotAllowed`` into something else, and as soon as an app
has one middleware, aiohttp runs the chain for every request of every route. The app
instead wraps each route's handler (``backend.http.errors.json_errors``) and registers
``add_unrouted`` last: a resource that takes whatever no other route took and answers it
as the router would have, in the JSON error shape.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import (
    AbstractResource,
    AbstractRoute,
    ResourceRoute,
    UrlDispatcher,
    UrlMappingMatchInfo,
    _InfoDict,
)
from yarl import URL

from backend.http.errors import json_errors

__all__ = ["add_unrouted"]


class _Unrouted(AbstractResource):
    """Matches every request no route of the app took, and answers it as aiohttp's router
    would (405 with ``Allow`` when a route has the path, else 404), in the JSON shape.

    Registered last (``add_unrouted``). It lists no routes, so ``router.routes()`` (the
    OpenAPI check) shows the app's own routes only."""

    def __init__(self, router: UrlDispatcher) -> None:
        super().__init__()
        self._router = router
        self._route = ResourceRoute(hdrs.METH_ANY, json_errors(self._refuse), self)

    @property
    def canonical(self) -> str:
        return "/"  # indexed under "/", which the router tries after every longer prefix

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("no URL for unrouted requests")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the unrouted resource takes no prefix")

    def get_info(self) -> _InfoDict:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter(())

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        return UrlMappingMatchInfo({}, self._route), set()

    async def _refuse(self, request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in self._router.resources():
            if resource is not self:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()


def add_unrouted(app: web.Application) -> None:
    """Answer requests no route takes with the JSON 404/405 (after every other route)."""
    app.router.register_resource(_Unrouted(app.router))
