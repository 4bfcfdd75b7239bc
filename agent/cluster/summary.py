"""What the aggregator says over every node's entry: the pull-test summary and the connectivity
matrix."""

from __future__ import annotations

from collections.abc import Iterable

from agent.cluster.models import (
    ConnectivityEntry,
    ConnectivityMatrix,
    MatrixCell,
    MatrixColumn,
    MatrixSummary,
    NodeEntry,
    NodeFailure,
    ReachableRow,
    Summary,
    UnreachableRow,
)

__all__ = ["connectivity_matrix", "failure_cause", "summarize"]


def failure_cause(entry: NodeEntry) -> str | None:
    """None when the node can pull; else why not: its cause, the guard that refused the pull
    (``image_too_large``, ``insufficient_space``), or ``unknown``."""
    if entry.success:
        return None
    refused = "" if isinstance(entry, NodeFailure) else entry.refused
    return str(entry.cause or refused or "unknown")


def summarize(entries: Iterable[NodeEntry], *, duration_ms: float = 0.0) -> Summary:
    """``{nodes, ok, failed, by_cause, digests, digest_drift, duration_ms}`` over node entries:
    node names sorted in each list, causes sorted, digests in the order the nodes came."""
    nodes = ok = 0
    by_cause: dict[str, list[str]] = {}
    digests: dict[str, list[str]] = {}
    for entry in entries:
        nodes += 1
        cause = failure_cause(entry)
        if cause is None:
            ok += 1
        else:
            by_cause.setdefault(cause, []).append(entry.node)
        digest = "" if isinstance(entry, NodeFailure) else entry.digest
        if digest:
            digests.setdefault(digest, []).append(entry.node)
    for names in (*by_cause.values(), *digests.values()):
        names.sort()
    return Summary(
        nodes=nodes,
        ok=ok,
        failed=nodes - ok,
        by_cause=dict(sorted(by_cause.items())),
        digests=digests,
        digest_drift=len(digests) > 1,
        duration_ms=duration_ms,
    )


def connectivity_matrix(entries: Iterable[ConnectivityEntry]) -> ConnectivityMatrix:
    """Rows = nodes (sorted), columns = registry endpoints (in the order the runtime tries
    them, as the nodes listed them first)."""
    columns: dict[str, MatrixColumn] = {}
    rows: list[ReachableRow | UnreachableRow] = []
    failing: dict[str, list[str]] = {}
    unreachable: list[str] = []
    for entry in sorted(entries, key=lambda e: e.node):
        if isinstance(entry, NodeFailure):
            unreachable.append(entry.node)
            rows.append(
                UnreachableRow(
                    node=entry.node,
                    cause=entry.cause,
                    summary=entry.summary,
                    remedy=entry.remedy,
                    status=entry.status,
                )
            )
            continue
        cells: dict[str, MatrixCell] = {}
        for report in entry.registries:
            for probed in report.endpoints:
                url = probed.endpoint.url
                columns.setdefault(
                    url, MatrixColumn(registry=report.registry, url=url, role=probed.endpoint.role)
                )
                cells[url] = MatrixCell(
                    success=probed.success, cause=probed.cause, summary=probed.summary
                )
                if not probed.success:
                    failing.setdefault(url, []).append(entry.node)
        rows.append(ReachableRow(node=entry.node, cells=cells))
    return ConnectivityMatrix(
        columns=list(columns.values()),
        rows=rows,
        summary=MatrixSummary(nodes=len(rows), unreachable=unreachable, failing=failing),
    )
