"""Loading, watching and scheduling warm-cache (pre-pull) jobs.

* :func:`load_jobs` reads and validates a job file. Every problem is reported at once, each
  naming its field: ``jobs.yaml: jobs[1] (warm-base).pacing.max_parallel_nodes: '150%' is
  neither …``; YAML syntax errors give the line; duplicate YAML keys are errors, not silently
  the last one.
* :class:`JobSource` watches the file as mounted from a ConfigMap (``jobs.yaml`` →
  ``..data/jobs.yaml``, ``..data`` swapped atomically by kubelet) by polling the content hash of
  what the path resolves to: mtimes are unreliable on such swaps. A bad file keeps the previous
  jobs and sets :attr:`JobSource.last_error` until it is fixed.
* :func:`next_run` is the next cron time in the job's time zone, as an aware UTC datetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from croniter import CroniterBadDateError, croniter
from pydantic import ValidationError

from agent.cluster.prepull.models import Job, JobFile
from agent.errors import InvalidInput
from agent.validation import (
    describe_errors,
    describe_input,
    describe_yaml_error,
    join_problems,
    key_path,
)

__all__ = [
    "MAX_FILE_BYTES",
    "JobFileError",
    "JobSource",
    "due",
    "load_jobs",
    "next_run",
    "parse_jobs",
]

log = logging.getLogger("pullcheck.prepull")

MAX_FILE_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB


class JobFileError(InvalidInput, ValueError):
    """The job file is unusable. ``str()`` names the file and every bad field with its path.

    ``problems`` holds one ``"key.path: message"`` (or ``"line N, column M: …"``) per problem.
    """

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = tuple(problems)
        super().__init__(f"{path}: {join_problems(problems)}")


# --- reading ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (``<<`` merges may override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _duplicates(data: dict[str, Any]) -> list[str]:
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, job in enumerate(jobs):
        name = job.get("name") if isinstance(job, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(
                f"{key_path(('jobs', index, 'name'), data)}: "
                f"duplicate job name (also jobs[{first[name]}])"
            )
        else:
            first[name] = index
    return problems


def _over_max_timeout(data: dict[str, Any], max_timeout: float) -> list[str]:
    """Jobs whose per-pull ``timeout`` the agents would refuse (over their ``limits.max_timeout``).

    Read from the raw data, so they are reported together with any other problem of the file;
    a timeout that is not a number is the model's to report.
    """
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        return []
    default = float(Job.model_fields["timeout"].default)
    problems = []
    for index, job in enumerate(jobs):
        if not isinstance(job, dict):
            continue
        given = job.get("timeout", default)
        if isinstance(given, bool) or not isinstance(given, int | float) or given <= max_timeout:
            continue
        which = "" if "timeout" in job else " (the default)"
        problems.append(
            f"{key_path(('jobs', index, 'timeout'), data)}: {given:g} s{which} is over the agents' "
            f"limits.max_timeout ({max_timeout:g} s), so the agents would refuse every pull; "
            "lower the job's timeout or raise limits.max_timeout"
        )
    return problems


def parse_jobs(
    content: bytes | str, source: Path | str, *, max_timeout: float | None = None
) -> JobFile:
    """Validate a job file's content; ``source`` names it in errors. Empty → no jobs.

    ``max_timeout``: the agents' ``limits.max_timeout`` (aggregator and agents share one config);
    a job asking for a longer per-pull timeout is an error.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobFileError(source, [f"not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = yaml.load(content, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise JobFileError(source, [describe_yaml_error(exc)]) from None
    if data is None:
        return JobFile()
    if not isinstance(data, dict):
        got = describe_input(data)
        raise JobFileError(
            source, [f"the top level must be a mapping with a 'jobs' list, got {got}"]
        )
    duplicates = _duplicates(data)
    too_long = [] if max_timeout is None else _over_max_timeout(data, max_timeout)
    try:
        jobs = JobFile.model_validate(data)
    except ValidationError as exc:
        # with duplicates, the model's "names must be unique" is already reported per job
        errors = [e for e in exc.errors() if e["loc"] or not duplicates]
        problems = describe_errors(errors, data=data, model=JobFile, root="jobs")
        raise JobFileError(source, problems + duplicates + too_long) from None
    if duplicates or too_long:  # duplicates: unreachable while the model checks them
        raise JobFileError(source, duplicates + too_long)
    return jobs


def _read(path: Path) -> bytes:
    """The file's bytes (through symlinks), or JobFileError; FileNotFoundError passes through."""
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise JobFileError(path, ["is a directory, not a file"]) from None
    except OSError as exc:
        raise JobFileError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    if len(content) > MAX_FILE_BYTES:
        raise JobFileError(path, [f"larger than {MAX_FILE_BYTES // 1024} KiB"])
    return content


def load_jobs(path: Path, *, missing_ok: bool = False, max_timeout: float | None = None) -> JobFile:
    """Read and validate the job file at ``path`` (``max_timeout``: see :func:`parse_jobs`).

    A missing file is "no jobs" only with ``missing_ok`` (the default path, not configured);
    otherwise it is an error. Raises :class:`JobFileError`.
    """
    try:
        content = _read(path)
    except FileNotFoundError:
        if missing_ok:
            return JobFile()
        raise JobFileError(path, ["no such file"]) from None
    return parse_jobs(content, path, max_timeout=max_timeout)


# --- watching -----------------------------------------------------------------------------------


class JobSource:
    """One job file, polled for changes every ``interval`` seconds.

    Nothing is read on construction: :meth:`check_now` (or :meth:`run`) loads it. ``current``
    is the last accepted job file (empty until one is), ``version`` counts accepted changes
    (0 = none yet; the first successful load makes it 1, later loads bump it only when the
    jobs differ — an edited comment is no change), ``last_error`` is why the file on disk is
    not the one in use (None when it is).
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 5.0,
        missing_ok: bool = False,
        max_timeout: float | None = None,
    ) -> None:
        self.path = path
        self.interval = interval
        self.missing_ok = missing_ok
        self.max_timeout = max_timeout  # the agents' limits.max_timeout: see parse_jobs
        self.current = JobFile()
        self.version = 0
        self.last_error: str | None = None
        self.digest: str | None = None  # sha256 of the accepted content; None: no file
        self._seen: str | None = None  # what the last check saw: a content hash or an error

    def check_now(self) -> bool:
        """Poll once. True when new jobs were accepted (``current`` replaced, version bumped)."""
        digest: str | None = None
        try:
            try:
                content = _read(self.path)
            except FileNotFoundError:
                if not self.missing_ok:
                    raise JobFileError(self.path, ["no such file"]) from None
                seen = "missing"
                if seen == self._seen:
                    return False
                self._seen = seen
                jobs = JobFile()
            else:
                digest = hashlib.sha256(content).hexdigest()
                if digest == self._seen:
                    return False
                self._seen = digest
                jobs = parse_jobs(content, self.path, max_timeout=self.max_timeout)
        except JobFileError as exc:
            message = str(exc)
            if digest is None:  # unreadable: the content hash was not reached
                if self._seen == f"error:{message}":
                    return False  # reported already
                self._seen = f"error:{message}"
            self.last_error = message
            log.error(
                "job file rejected, keeping %d job(s) of version %d: %s",
                len(self.current.jobs),
                self.version,
                message,
                extra={"fields": {"jobs_file": str(self.path), "version": self.version}},
            )
            return False
        recovered = self.last_error is not None
        self.last_error = None
        self.digest = digest
        if self.version > 0 and jobs == self.current:
            if recovered:
                log.info(
                    "job file valid again, jobs unchanged (version %d)",
                    self.version,
                    extra={"fields": {"jobs_file": str(self.path), "version": self.version}},
                )
            return False
        self.current = jobs
        self.version += 1
        log.info(
            "job file loaded: %d job(s), version %d",
            len(jobs.jobs),
            self.version,
            extra={"fields": {"jobs_file": str(self.path), "version": self.version}},
        )
        return True

    async def run(self, stop: asyncio.Event, on_change: Callable[[JobFile], None]) -> None:
        """Poll until ``stop``; call ``on_change(current)`` after each accepted change.

        The first poll is immediate. An exception from ``on_change`` is logged, not raised.
        """
        while not stop.is_set():
            if self.check_now():
                try:
                    on_change(self.current)
                except Exception:
                    log.exception(
                        "applying job file version %d failed",
                        self.version,
                        extra={"fields": {"jobs_file": str(self.path)}},
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)


# --- schedules ----------------------------------------------------------------------------------


def _fixed_time(schedule: str) -> bool:
    """Neither minute nor hour is a wildcard: such a job runs once per matching wall time.

    As in Vixie cron: on a fall-back day, "30 2 * * *" runs at the first 02:30 only, while
    "*/15 * * * *" keeps its 15 minutes of real time through the repeated hour.
    """
    minute, hour = schedule.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def _repeated(local: datetime) -> bool:
    """``local`` is the second occurrence of a wall time repeated when clocks go back."""
    first = local.replace(fold=0).astimezone(UTC)
    second = local.replace(fold=1).astimezone(UTC)
    return first < second and local.astimezone(UTC) == second


def next_run(job: Job, after: datetime) -> datetime | None:
    """The job's next cron time strictly after ``after`` (aware), as an aware UTC datetime.

    Times are wall-clock times in ``job.timezone``. When clocks go forward, a fixed time in the
    skipped hour (02:30) runs at the first instant after the gap (03:00 new time); when they go
    back, a fixed time runs once (the first 02:30) and wildcard schedules (``*/15 * * * *``)
    follow real time through the repeated hour. None when the job has no schedule.
    """
    if job.schedule is None:
        return None
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_run needs a timezone-aware datetime")
    fixed = _fixed_time(job.schedule)
    times = croniter(job.schedule, after.astimezone(ZoneInfo(job.timezone)))
    try:
        for _ in range(1000):
            candidate: datetime = times.get_next(datetime)
            if not (fixed and _repeated(candidate)):
                return candidate.astimezone(UTC)
    except CroniterBadDateError:  # never fires; the model rejects such schedules
        return None
    return None


def due(job: Job, last: datetime | None, now: datetime) -> bool:
    """Whether a scheduled time of ``job`` lies in ``(last, now]``.

    ``last`` is when the schedule was last considered (a run, or the process start); None means
    never, and nothing is due: a restart does not by itself start every job.
    """
    if last is None:
        return False
    upcoming = next_run(job, last)
    return upcoming is not None and upcoming <= now
