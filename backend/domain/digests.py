"""The one digest of a secret (a device's MQTT password, an API token, the hook secret).

Stored and compared as the SHA-256 hex digest of the UTF-8 text. Lone surrogates (which
strict UTF-8 cannot encode, and which an HTTP form or JSON body may still carry) are
encoded with ``surrogatepass``: such a secret gets a digest that matches nothing stored,
instead of an exception on the request path.
"""

from __future__ import annotations

import hashlib

__all__ = ["secret_digest"]


def secret_digest(secret: str) -> str:
    """SHA-256 hex of ``secret`` (64 lowercase hex characters)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
