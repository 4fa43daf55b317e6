"""Fixtures of the integration tests (helpers live in tests/support)."""

from __future__ import annotations

import pytest

from tests.support.real_client import ClientBuild, build_client, require_node


@pytest.fixture(scope="session")
def client_build() -> ClientBuild:
    """The upstream locker-client built once per session (`npm ci && npx tsc`, cached on
    disk across sessions); skips without node (fails under CI=true)."""
    require_node()
    return build_client()
