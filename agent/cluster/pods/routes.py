"""``/v1/pods``: the automatic diagnosis' findings, and the pull tests of one pod on demand.

``POST /v1/pods/{namespace}/{name}/pulltest`` tests every container of the pod waiting on an
image pull on the pod's node with the pod's pull secrets, which the aggregator reads itself (the
caller sends none and sees none). It pulls, so it is refused when pullcheck is read-only.
``GET /v1/pods[?namespace=ns]`` lists what the diagnosis currently tracks (on the leading
replica; a follower answers ``leading: false`` and an empty list).
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path, Query

from agent.cluster.discovery import DiscoveryError
from agent.cluster.pods.models import PodDiagnoses, PodPullTests
from agent.cluster.routes._state import State
from agent.kube.client import KubeApiError
from agent.kube.names import NAMESPACE, OBJECT_NAME
from agent.service.dependencies import protected_router
from agent.service.errors import ApiError, ErrorAnswer

__all__ = ["router"]

_KUBE_STATUS: Final = {"not_found": 404, "forbidden": 502, "unauthorized": 502}

router = protected_router(
    "pods",
    errors=[403],
    responses={
        status: {"model": ErrorAnswer, "description": text}
        for status, text in (
            (404, "The pod does not exist."),
            (502, "The API server refused a read (the message names the RBAC rule)."),
            (409, "The aggregator has no Kubernetes API access configured."),
            (503, "The aggregator cannot reach the API server."),
        )
    },
)

Namespace = Annotated[str, Path(max_length=63, description="the pod's namespace")]
Name = Annotated[str, Path(max_length=253, description="the pod's name")]


@router.post("/v1/pods/{namespace}/{name}/pulltest", response_model=PodPullTests)
async def pod_pulltest(state: State, namespace: Namespace, name: Name) -> PodPullTests:
    """Test the pod's failing images on its node with its own pull secrets."""
    if not NAMESPACE.match(namespace):
        raise ApiError(400, "bad_request", "namespace: not a namespace name (a DNS label)")
    if not OBJECT_NAME.match(name):
        raise ApiError(400, "bad_request", "name: not a pod name (a DNS subdomain)")
    if state.settings.read_only:
        raise ApiError(403, "read_only", "pullcheck is read-only here: a pod's test pulls")
    try:
        answer = await state.pods.test_pod(namespace, name)
    except KubeApiError as exc:
        status = _KUBE_STATUS.get(exc.kind, 503)
        kind = "not_found" if exc.kind == "not_found" else "kube_api"
        raise ApiError(status, kind, f"the aggregator could not {exc}") from None
    except DiscoveryError as exc:  # no service account token and no kubeconfig: a setting
        raise ApiError(
            409, "not_configured", f"this aggregator has no Kubernetes API access: {exc}"
        ) from None
    state.metrics.observe_request("pods", "ok")
    return answer


@router.get("/v1/pods", response_model=PodDiagnoses)
async def pod_diagnoses(
    state: State,
    namespace: Annotated[str | None, Query(max_length=63, description="only this one")] = None,
) -> PodDiagnoses:
    """Containers failing to pull that the automatic diagnosis tracks, with its verdicts."""
    if namespace is not None and not NAMESPACE.match(namespace):
        raise ApiError(400, "bad_request", "namespace: not a namespace name (a DNS label)")
    diagnoser = state.pods.diagnoser
    return PodDiagnoses(
        enabled=state.settings.aggregator.pod_diagnosis.enabled,
        leading=diagnoser is not None,
        pods=diagnoser.diagnoses(namespace) if diagnoser is not None else [],
    )
