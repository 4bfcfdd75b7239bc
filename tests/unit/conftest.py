"""Helpers for the unit tests that run a real uvicorn server in-process."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import uvicorn

_LOGGERS = ("pullcheck", "agent", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the logging set-up of the loggers pullcheck and uvicorn configure back afterwards."""
    saved = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


def capture_uvicorn_logs(out: io.StringIO) -> None:
    """Send what the handlers of uvicorn's loggers (as a ``uvicorn.Config`` set them) write to
    ``out``."""
    for name in ("uvicorn", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(out)


@asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[str]:
    """Run a uvicorn server with ``config`` (port 0: any free one); yield its base URL."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raise what stopped it
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
