"""The dependency every aggregator route takes: the aggregator's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from agent.cluster.state import AggregatorState
from agent.service.dependencies import state_of

__all__ = ["State"]


def _aggregator(request: Request) -> AggregatorState:
    state = state_of(request)
    if not isinstance(state, AggregatorState):
        raise TypeError("not an aggregator app: build it with create_aggregator_app()")
    return state


#: a route parameter giving the aggregator's state
State = Annotated[AggregatorState, Depends(_aggregator)]
