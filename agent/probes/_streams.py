"""Closing a probe's raw asyncio connection without waiting long for the peer."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

__all__ = ["close_stream"]

_CLOSE_WAIT = 1.0  # seconds a close waits for the peer at most


async def close_stream(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer`` (if any); a peer that does not answer the close is not waited for."""
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT)
