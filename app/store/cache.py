"""The run store's output cache: outputs kept under a cacheConfig's key for its TTL.

Plain strings with an expiry, shared by every run: Redis drops an entry when its TTL
is over, so nothing here ever needs cleaning up. What the key is made of (the templated
key, the task's type and name) is app.runtime.cache's business.
"""

from __future__ import annotations

from app.store.base import StoreBase
from app.store.keys import output_cache_key


class OutputCache(StoreBase):
    """The output cache part of RunStore."""

    def cached_output(self, kind: str, name: str, digest: str) -> str | None:
        """The output (JSON text) kept under a key, or None (never kept, or expired)."""
        value = self.guard(lambda: self.client.get(output_cache_key(kind, name, digest)))
        return str(value) if value is not None else None

    def cache_output(self, kind: str, name: str, digest: str, output_json: str,
                     ttl_seconds: int) -> None:
        """Keep an output under a key for `ttl_seconds` (a newer one replaces it)."""
        key = output_cache_key(kind, name, digest)
        self.guard(lambda: self.client.set(key, output_json, ex=ttl_seconds))
