"""The intercepted connection handed to ``Plugin.intercept`` (inline mode).

``conn.client`` and ``conn.server`` are stream-like endpoints on asyncio; the inline engine
(stack's active TCP) implements them. Bytes forwarded before the cut-in are not handed over
again: each endpoint delivers every byte exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .api import FlowView


class Endpoint(Protocol):
    async def read(self, n: int = 65536) -> bytes:
        """Up to n bytes as soon as any are there; b"" once the peer's FIN was read.
        Raises ConnectionResetError once the peer reset the connection."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None:
        """Half-close: send FIN; reading goes on until the peer's FIN."""
        ...

    def abort(self) -> None:
        """Send RST."""
        ...


class InterceptedConnection(Protocol):
    client: Endpoint
    server: Endpoint
    flow: FlowView


# The splice lives with the other built-in handlers; importable from here as before.
from .handlers import pipe, relay  # noqa: E402

__all__ = ["Endpoint", "InterceptedConnection", "pipe", "relay"]
