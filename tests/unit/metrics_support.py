"""Read an instance's metrics back from its exposition, parsed by prometheus_client's parser."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent.service.metrics import ServiceMetrics

#: An IPv4 address or something shaped like an IPv6 one: never part of a label value.
IP_RE = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\[?[0-9a-f]*:[0-9a-f:]*:[0-9a-f]*\]?")


def samples(metrics: ServiceMetrics) -> list[Sample]:
    """Every sample of the text exposition (which must be the classic format 0.0.4)."""
    payload, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return [s for fam in text_string_to_metric_families(payload.decode()) for s in fam.samples]


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` with exactly ``labels``, None when there is none."""
    found = [s.value for s in samples(metrics) if s.name == name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def label_values(metrics: ServiceMetrics, name: str, label: str) -> set[str]:
    """The values ``label`` takes in the samples ``name``."""
    return {s.labels[label] for s in samples(metrics) if s.name == name and label in s.labels}
