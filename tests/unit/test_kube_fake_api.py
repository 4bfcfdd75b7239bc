"""The fake kube-apiserver's pods, events, secrets and watch behave as the real one answers:
lists and field selectors, RBAC wording, Event create/patch with counts, the events.k8s.io view,
and watch streams with bookmarks, resume from a resourceVersion and 410 after compaction."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import kube_objects as ko
from tests.fakes.kube_api import FakeKubeApi, serve_kube_api

TOKEN, USER, NS = "watcher-token", "system:serviceaccount:pullcheck:aggregator", "shop"
NOW = dt.datetime(2025, 6, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with serve_kube_api() as fake:
        fake.add_user(TOKEN, USER)
        for resource in ("pods", "events", "events.events.k8s.io"):
            fake.grant(USER, resource, ("get", "list", "watch", "create", "patch"))
        yield fake


def _get(api: FakeKubeApi, path: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.get(api.url + path, params=params, headers=headers, trust_env=False)


def _failing(name: str, node: str = "node-1") -> dict[str, Any]:
    return ko.pod(
        name,
        NS,
        node=node,
        containers=[ko.Container("app", "busybox:9", waiting="ErrImagePull", error="not found")],
    )


class _Stream:
    """A watch read on a thread: its lines as they arrive."""

    def __init__(self, api: FakeKubeApi, path: str, **params: str) -> None:
        self.lines: list[dict[str, Any]] = []
        self.done = threading.Event()
        self._arrived = threading.Condition()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        self._request = (api.url + path, {"watch": "1", **params}, headers)
        self.status = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        url, params, headers = self._request
        with httpx.stream("GET", url, params=params, headers=headers, timeout=30) as reply:
            self.status = reply.status_code
            for line in reply.iter_lines():
                with self._arrived:
                    self.lines.append(json.loads(line))
                    self._arrived.notify_all()
        self.done.set()
        with self._arrived:
            self._arrived.notify_all()

    def wait(self, count: int) -> list[dict[str, Any]]:
        with self._arrived:
            ok = self._arrived.wait_for(lambda: len(self.lines) >= count or self.done.is_set(), 10)
        assert ok and len(self.lines) >= count, self.lines
        return self.lines[:count]


def _watching(api: FakeKubeApi, count: int) -> None:
    for _ in range(500):
        if api.watch_count() >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the watch did not open")


def test_list_with_field_selector_and_list_shape(api: FakeKubeApi) -> None:
    api.put(_failing("a", node="node-1"))
    api.put(_failing("b", node="node-2"))
    reply = _get(api, f"/api/v1/namespaces/{NS}/pods", fieldSelector="spec.nodeName=node-2")
    body = reply.json()
    assert (reply.status_code, body["kind"], body["apiVersion"]) == (200, "PodList", "v1")
    assert [i["metadata"]["name"] for i in body["items"]] == ["b"]
    assert "kind" not in body["items"][0]
    assert int(body["metadata"]["resourceVersion"]) == api.resource_version
    bad = _get(api, f"/api/v1/namespaces/{NS}/pods", fieldSelector="spec.image=x")
    assert (bad.status_code, bad.json()["message"]) == (
        400,
        "field label not supported: spec.image",
    )


def test_forbidden_wording_per_verb_and_scope(api: FakeKubeApi) -> None:
    api.revoke(USER, "pods")
    api.grant(USER, "pods", ("list",), namespace=NS)
    reply = _get(api, f"/api/v1/namespaces/{NS}/pods/web")
    assert reply.status_code == 403
    assert reply.json()["message"] == (
        f'pods "web" is forbidden: User "{USER}" cannot get resource "pods" in API group "" '
        f'in the namespace "{NS}"'
    )
    assert reply.json()["details"] == {"name": "web", "kind": "pods"}
    reply = _get(api, "/api/v1/pods")
    assert reply.json()["message"] == (
        f'pods is forbidden: User "{USER}" cannot list resource "pods" in API group "" '
        "at the cluster scope"
    )
    reply = _get(api, "/api/v1/secrets")  # never granted
    assert reply.status_code == 403 and 'cannot list resource "secrets"' in reply.json()["message"]


def test_event_create_patch_count_and_the_events_v1_view(api: FakeKubeApi) -> None:
    pod = api.put(_failing("web"))
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"generateName": "web.", "namespace": NS},
        "involvedObject": {
            "kind": "Pod",
            "namespace": NS,
            "name": "web",
            "uid": pod["metadata"]["uid"],
        },
        "reason": "PullcheckDiagnosis",
        "message": "unauthorized: no entry matches — add one",
        "type": "Warning",
        "count": 1,
        "source": {"component": "pullcheck"},
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    made = httpx.post(f"{api.url}/api/v1/namespaces/{NS}/events", json=event, headers=headers)
    assert made.status_code == 201
    name = made.json()["metadata"]["name"]
    assert name.startswith("web.")
    patch = {
        "count": 2,
        "metadata": {"resourceVersion": made.json()["metadata"]["resourceVersion"]},
    }
    patched = httpx.patch(
        f"{api.url}/api/v1/namespaces/{NS}/events/{name}",
        content=json.dumps(patch),
        headers={**headers, "Content-Type": "application/merge-patch+json"},
    )
    assert (patched.status_code, patched.json()["count"]) == (200, 2)
    stale = httpx.patch(
        f"{api.url}/api/v1/namespaces/{NS}/events/{name}",
        content=json.dumps(patch),
        headers={**headers, "Content-Type": "application/merge-patch+json"},
    )
    assert (stale.status_code, stale.json()["reason"]) == (409, "Conflict")
    listed = _get(
        api,
        f"/api/v1/namespaces/{NS}/events",
        fieldSelector="involvedObject.name=web,reason=PullcheckDiagnosis",
    ).json()["items"]
    assert [e["count"] for e in listed] == [2]
    view = _get(api, f"/apis/events.k8s.io/v1/namespaces/{NS}/events").json()["items"]
    assert view[0]["regarding"]["name"] == "web"
    assert view[0]["note"] == event["message"]
    assert view[0]["deprecatedCount"] == 2
    assert view[0]["eventTime"] is None  # as the apiserver shows legacy events
    wrong = dict(event, involvedObject={**event["involvedObject"], "namespace": "other"})
    refused = httpx.post(f"{api.url}/api/v1/namespaces/{NS}/events", json=wrong, headers=headers)
    assert refused.status_code == 422


def test_watch_added_modified_deleted_bookmark(api: FakeKubeApi) -> None:
    api.put(_failing("before"))
    stream = _Stream(api, f"/api/v1/namespaces/{NS}/pods", allowWatchBookmarks="true")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in stream.wait(1)] == [
        ("ADDED", "before")
    ]
    _watching(api, 1)
    fixed = _failing("before")
    fixed["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "now"}}
    api.put(fixed)
    api.delete("Pod", NS, "before")
    api.bookmark()
    events = stream.wait(4)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    assert events[1]["object"]["status"]["containerStatuses"][0]["state"]["running"]
    assert events[3]["object"]["metadata"]["resourceVersion"] == str(api.resource_version)
    assert events[3]["object"]["kind"] == "Pod"
    api.close_watches()
    assert stream.done.wait(5)


def test_watch_resumes_from_a_version_and_filters_by_field(api: FakeKubeApi) -> None:
    api.put(_failing("a", node="node-1"))
    since = api.resource_version
    api.put(_failing("b", node="node-1"))
    api.put(_failing("c", node="node-2"))
    stream = _Stream(
        api, "/api/v1/pods", resourceVersion=str(since), fieldSelector="spec.nodeName=node-1"
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in stream.wait(1)] == [
        ("ADDED", "b")
    ]
    _watching(api, 1)
    api.put(_failing("b", node="node-2"))  # moved off the selector: DELETED for this watch
    assert stream.wait(2)[1]["type"] == "DELETED"


def test_watch_from_a_compacted_version_gets_410_expired(api: FakeKubeApi) -> None:
    api.put(_failing("a"))
    old = api.resource_version
    api.put(_failing("b"))
    api.compact()
    stream = _Stream(api, f"/api/v1/namespaces/{NS}/pods", resourceVersion=str(old))
    [event] = stream.wait(1)
    assert stream.done.wait(5)
    assert stream.status == 200
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {old} (")


def test_window_bounds_history_and_injected_failures(api: FakeKubeApi) -> None:
    api.watch_window = 3
    first = api.resource_version
    for number in range(5):
        api.put(_failing(f"p{number}"))
    stream = _Stream(api, f"/api/v1/namespaces/{NS}/pods", resourceVersion=str(first))
    assert stream.wait(1)[0]["object"]["code"] == 410
    api.fail("pods", 500, times=1, verb="list")
    reply = _get(api, f"/api/v1/namespaces/{NS}/pods")
    assert (reply.status_code, reply.json()["reason"]) == (500, "InternalError")
    assert _get(api, f"/api/v1/namespaces/{NS}/pods").status_code == 200


def test_docker_secret_the_apiserver_would_refuse_is_refused() -> None:
    with serve_kube_api() as fake:
        with pytest.raises(ValueError, match="not JSON"):
            fake.put(
                ko.secret("x", NS, "kubernetes.io/dockerconfigjson", {".dockerconfigjson": "{"})
            )
        with pytest.raises(ValueError, match="Required value"):
            fake.put(ko.secret("x", NS, "kubernetes.io/dockercfg", {}))
