"""Ctrl-C during a command's async work: cancel the work, let it report what it has, exit 130.

``asyncio.run`` already turns the first SIGINT into a cancellation of the main task, but a
coroutine that catches the cancellation and returns a result (as ``run_pull_test`` does) makes
the interruption invisible afterwards. :func:`run_interruptible` installs its own handler so the
command knows it was interrupted and can print the result and exit 130.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_interruptible"]


def run_interruptible(work: Coroutine[Any, Any, T]) -> tuple[T, bool]:
    """Run ``work``; return its result and whether Ctrl-C interrupted it.

    The first SIGINT cancels ``work`` (which may catch the cancellation and return what it
    gathered); a second one raises KeyboardInterrupt at once. When ``work`` does not catch the
    cancellation, KeyboardInterrupt is raised too, which click turns into an abort (exit 130).
    """
    interrupted = False

    async def guarded() -> T:
        nonlocal interrupted
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted:
                raise KeyboardInterrupt
            interrupted = True
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    return result, interrupted
