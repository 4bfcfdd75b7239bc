"""Job files: loading with precise errors, reloading (ConfigMap symlink swaps), and schedules."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from textwrap import dedent
from zoneinfo import ZoneInfo

import pytest

from agent.cluster.prepull.jobs import JobFileError, JobSource, due, load_jobs, next_run, parse_jobs
from agent.cluster.prepull.models import Job, JobFile

VALID = """\
jobs:
  - name: warm-base
    images: [docker.io/library/nginx:1.27, registry.k8s.io/pause:3.10]
    schedule: "30 2 * * *"
    timezone: Europe/Berlin
    on_new_node: true
    pacing:
      max_parallel_nodes: 10%
      per_registry: 2
    nodes:
      labels: {node-role.kubernetes.io/worker: ""}
  - name: gpu-drivers
    images: ["ghcr.io/example/driver@DIGEST"]
    on_new_node: true
    policy: Always
""".replace("DIGEST", "sha256:" + "a" * 64)


def _job(schedule: str | None, timezone: str = "UTC", *, on_new_node: bool = False) -> Job:
    return Job(
        name="j", images=["nginx"], schedule=schedule, timezone=timezone, on_new_node=on_new_node
    )


def _error(text: str) -> str:
    with pytest.raises(JobFileError) as caught:
        parse_jobs(dedent(text), "jobs.yaml")
    message = str(caught.value)
    assert message.startswith("jobs.yaml: ")
    assert "Traceback" not in message
    return message


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- loading ------------------------------------------------------------------------------------


def test_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(VALID)
    jobs = load_jobs(path)
    assert [j.name for j in jobs.jobs] == ["warm-base", "gpu-drivers"]
    base, gpu = jobs.jobs
    assert base.schedule == "30 2 * * *" and base.timezone == "Europe/Berlin"
    assert base.pacing.max_parallel_nodes == "10%" and base.pacing.per_registry == 2
    assert base.nodes.labels == {"node-role.kubernetes.io/worker": ""}
    assert gpu.schedule is None and gpu.on_new_node and gpu.policy == "Always"


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# no jobs yet\n")
    assert load_jobs(empty) == JobFile()
    assert parse_jobs("jobs: []\n", "x") == JobFile()
    missing = tmp_path / "absent.yaml"
    assert load_jobs(missing, missing_ok=True) == JobFile()
    with pytest.raises(JobFileError, match=r"absent\.yaml: no such file$"):
        load_jobs(missing)
    with pytest.raises(JobFileError, match="is a directory"):
        load_jobs(tmp_path)


def test_bad_image_reference_named() -> None:
    message = _error("""\
        jobs:
          - name: warm-base
            images: [nginx, "Nginx:latest"]
            on_new_node: true
        """)
    assert message == (
        "jobs.yaml: jobs[0] (warm-base).images: 'Nginx:latest': "
        "repository name (library/Nginx) must be lowercase"
    )


def test_bad_cron_named() -> None:
    message = _error("""\
        jobs:
          - name: nightly
            images: [nginx]
            schedule: "0 3 * *"
        """)
    assert message == (
        "jobs.yaml: jobs[0] (nightly).schedule: '0 3 * *' is not a 5-field cron expression"
    )
    assert "never fires" in _error("""\
        jobs:
          - {name: feb30, images: [nginx], schedule: "0 0 30 2 *"}
        """)
    assert "random (R)" in _error("""\
        jobs:
          - {name: dice, images: [nginx], schedule: "R 3 * * *"}
        """)


def test_unknown_time_zone_named() -> None:
    message = _error("""\
        jobs:
          - name: nightly
            images: [nginx]
            schedule: "0 3 * * *"
            timezone: Europe/Atlantis
        """)
    assert message == "jobs.yaml: jobs[0] (nightly).timezone: unknown time zone 'Europe/Atlantis'"


def test_bad_percentage_named() -> None:
    message = _error("""\
        jobs:
          - {name: first, images: [nginx], on_new_node: true}
          - name: warm-base
            images: [nginx]
            on_new_node: true
            pacing: {max_parallel_nodes: 150%}
        """)
    assert message == (
        "jobs.yaml: jobs[1] (warm-base).pacing.max_parallel_nodes: '150%' is neither a number "
        "of nodes nor a percentage like 25%"
    )
    # neither a bool nor a float slips through as a number of nodes
    for value in ("true", "1.5"):
        message = _error(f"""\
            jobs:
              - {{name: w, images: [nginx], on_new_node: true,
                  pacing: {{max_parallel_nodes: {value}}}}}
            """)
        assert message.startswith("jobs.yaml: jobs[0] (w).pacing.max_parallel_nodes: ")
        assert "is neither a number of nodes" in message
        assert message.count(";") == 0  # one problem, not one per union member


def test_unknown_keys_named_with_suggestion() -> None:
    message = _error("""\
        jobs:
          - name: nightly
            images: [nginx]
            shedule: "0 3 * * *"
            on_new_node: true
            pacing: {max_parallel: 3}
        """)
    assert message == (
        "jobs.yaml: jobs[0] (nightly).pacing.max_parallel: unknown key "
        "(did you mean 'max_parallel_nodes'?); "
        "jobs[0] (nightly).shedule: unknown key (did you mean 'schedule'?)"
    )
    assert _error("jbos: []\n") == "jobs.yaml: jbos: unknown key (did you mean 'jobs'?)"


def test_duplicate_names_named() -> None:
    message = _error("""\
        jobs:
          - {name: warm, images: [nginx], on_new_node: true}
          - {name: other, images: [nginx], on_new_node: true}
          - {name: warm, images: [redis], on_new_node: true}
        """)
    assert message == "jobs.yaml: jobs[2] (warm).name: duplicate job name (also jobs[0])"
    # reported together with other problems, not only once everything else is valid
    message = _error("""\
        jobs:
          - {name: warm, images: [nginx], on_new_node: true}
          - {name: warm, images: [nginx], on_new_node: true, policy: Never}
        """)
    assert "jobs[1] (warm).policy: Input should be 'IfNotPresent' or 'Always'" in message
    assert "jobs[1] (warm).name: duplicate job name (also jobs[0])" in message


def test_job_without_trigger_named() -> None:
    message = _error("""\
        jobs:
          - name: idle
            images: [nginx]
        """)
    assert message == "jobs.yaml: jobs[0] (idle): needs a schedule, on_new_node: true, or both"


def test_yaml_syntax_error_with_line() -> None:
    message = _error("""\
        jobs:
          - name: nightly
            images: [nginx
            schedule: "0 3 * * *"
        """)
    assert message.startswith("jobs.yaml: line 4, column ")
    assert "invalid YAML" in message
    message = _error("jobs:\n  - name: a\n    images: [nginx]\n  on_new_node: true\n")
    assert message.startswith("jobs.yaml: line 4, column 3: invalid YAML: ")


def test_duplicate_yaml_key_is_an_error() -> None:
    message = _error("""\
        jobs:
          - name: nightly
            images: [nginx]
            schedule: "0 3 * * *"
            schedule: "0 4 * * *"
        """)
    assert message == (
        "jobs.yaml: line 5, column 5: invalid YAML: duplicate key 'schedule' (first at line 4)"
    )


def test_other_shapes_named() -> None:
    assert _error("- name: a\n") == (
        "jobs.yaml: the top level must be a mapping with a 'jobs' list, got a list"
    )
    assert _error("jobs:\n") == "jobs.yaml: jobs: must be a list, got null"
    assert _error("jobs: [warm]\n") == "jobs.yaml: jobs[0]: must be a mapping, got 'warm'"
    message = _error("""\
        jobs:
          - images: [nginx]
            on_new_node: maybe
            nodes: {labels: {app.kubernetes.io/name: 3}}
        """)
    assert "jobs[0].name: required key is missing" in message
    assert "jobs[0].on_new_node: Input should be a valid boolean" in message
    assert "(got 'maybe')" in message
    assert 'jobs[0].nodes.labels["app.kubernetes.io/name"]: Input should be a valid string' in (
        message
    )
    with pytest.raises(JobFileError, match="not UTF-8"):
        parse_jobs(b"jobs: [\xff]\n", "jobs.yaml")


def test_error_lists_problems() -> None:
    with pytest.raises(JobFileError) as caught:
        parse_jobs("jobs:\n  - {name: a, images: [nginx], schedule: x, timezone: Nowhere}\n", "f")
    assert caught.value.problems == (
        "jobs[0] (a).schedule: 'x' is not a 5-field cron expression",
        "jobs[0] (a).timezone: unknown time zone 'Nowhere'",
    )
    assert caught.value.path == Path("f")


def test_timeout_over_the_agents_max_timeout_is_named_with_both_values() -> None:
    """The agents refuse a pull whose timeout is over their limits.max_timeout: say so at load."""
    text = dedent(
        """\
        jobs:
          - {name: slow, images: [nginx], on_new_node: true, timeout: 1200}
          - {name: fine, images: [nginx], on_new_node: true, timeout: 900}
          - {name: default, images: [nginx], on_new_node: true}
        """
    )
    assert [j.name for j in parse_jobs(text, "jobs.yaml").jobs] == ["slow", "fine", "default"]
    with pytest.raises(JobFileError) as caught:
        parse_jobs(text, "jobs.yaml", max_timeout=900)
    assert caught.value.problems == (
        "jobs[0] (slow).timeout: 1200 s is over the agents' limits.max_timeout (900 s), so the "
        "agents would refuse every pull; lower the job's timeout or raise limits.max_timeout",
    )
    with pytest.raises(JobFileError) as caught:
        parse_jobs(text, "jobs.yaml", max_timeout=300)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "jobs[0] (slow).timeout",
        "jobs[1] (fine).timeout",
        "jobs[2] (default).timeout",
    ]
    assert "600 s (the default) is over the agents' limits.max_timeout (300 s)" in str(caught.value)


def test_timeout_problem_is_reported_with_the_others() -> None:
    with pytest.raises(JobFileError) as caught:
        parse_jobs(
            "jobs:\n  - {name: a, images: [nginx], timeout: 5000, schedule: x}\n",
            "f",
            max_timeout=3600,
        )
    assert caught.value.problems == (
        "jobs[0] (a).schedule: 'x' is not a 5-field cron expression",
        "jobs[0] (a).timeout: 5000 s is over the agents' limits.max_timeout (3600 s), so the "
        "agents would refuse every pull; lower the job's timeout or raise limits.max_timeout",
    )


def test_job_source_applies_the_max_timeout(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - {name: a, images: [nginx], on_new_node: true, timeout: 901}\n")
    assert load_jobs(path).jobs[0].timeout == 901
    with pytest.raises(JobFileError, match=r"901 s is over the agents' limits.max_timeout"):
        load_jobs(path, max_timeout=900)
    source = JobSource(path, max_timeout=900)
    assert source.check_now() is False and source.version == 0
    assert source.last_error is not None and "(a).timeout: 901 s" in source.last_error


# --- watching -----------------------------------------------------------------------------------


def _write(path: Path, names: list[str]) -> None:
    jobs = "".join(f"  - {{name: {n}, images: [nginx], on_new_node: true}}\n" for n in names)
    path.write_text("jobs:\n" + jobs)


def test_reload_on_change(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    _write(path, ["a"])
    source = JobSource(path, interval=0.01)
    assert source.version == 0 and source.current == JobFile()
    assert source.check_now() is True
    assert source.version == 1 and [j.name for j in source.current.jobs] == ["a"]
    assert source.check_now() is False  # nothing changed
    _write(path, ["a", "b"])
    assert source.check_now() is True
    assert source.version == 2 and [j.name for j in source.current.jobs] == ["a", "b"]
    # a comment is a new content hash but not new jobs
    path.write_text(path.read_text() + "# reviewed\n")
    assert source.check_now() is False and source.version == 2
    assert source.last_error is None


def test_bad_replacement_keeps_old_jobs_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.yaml"
    _write(path, ["a"])
    source = JobSource(path)
    assert source.check_now()
    old = source.current
    caplog.set_level(logging.INFO, logger="pullcheck.prepull")
    path.write_text("jobs:\n  - {name: a, images: [nginx], on_new_node: true, pacing: {x: 1}}\n")
    assert source.check_now() is False
    assert source.current is old and source.version == 1
    assert source.last_error == f"{path}: jobs[0] (a).pacing.x: unknown key"
    rejected = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(rejected) == 1 and "jobs[0] (a).pacing.x: unknown key" in rejected[0].getMessage()
    assert source.check_now() is False  # the same bad file is not reported again
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    _write(path, ["a", "c"])
    assert source.check_now() is True
    assert source.last_error is None and source.version == 2
    assert [j.name for j in source.current.jobs] == ["a", "c"]


def test_missing_file_is_an_error_unless_missing_ok(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    strict = JobSource(path)
    assert strict.check_now() is False and strict.version == 0
    assert strict.last_error == f"{path}: no such file"
    lenient = JobSource(path, missing_ok=True)
    assert lenient.check_now() is True and lenient.version == 1
    assert lenient.current == JobFile() and lenient.last_error is None
    _write(path, ["a"])
    assert strict.check_now() is True and strict.last_error is None
    assert lenient.check_now() is True and lenient.version == 2
    path.unlink()  # an optional ConfigMap deleted: no jobs
    assert lenient.check_now() is True and lenient.current == JobFile()
    assert strict.check_now() is False and len(strict.current.jobs) == 1
    assert strict.last_error == f"{path}: no such file"


def _configmap(root: Path, generation: str, names: list[str]) -> None:
    """What kubelet's atomic writer does: a new timestamped dir, then ``..data`` renamed over."""
    target = root / f"..2024_06_01_00_00_00.{generation}"
    target.mkdir()
    _write(target / "jobs.yaml", names)
    tmp = root / "..data_tmp"
    tmp.symlink_to(target.name)
    tmp.rename(root / "..data")  # atomic replacement of the symlink
    if not (root / "jobs.yaml").is_symlink():
        (root / "jobs.yaml").symlink_to("..data/jobs.yaml")


def test_configmap_symlink_swap_detected(tmp_path: Path) -> None:
    _configmap(tmp_path, "1", ["a"])
    source = JobSource(tmp_path / "jobs.yaml")
    assert source.check_now() and [j.name for j in source.current.jobs] == ["a"]
    first = tmp_path / "..2024_06_01_00_00_00.1" / "jobs.yaml"
    mtime = first.stat().st_mtime_ns
    _configmap(tmp_path, "2", ["a", "b"])
    # the new file has the old file's mtime: only the content tells
    os.utime(tmp_path / "..2024_06_01_00_00_00.2" / "jobs.yaml", ns=(mtime, mtime))
    assert source.check_now() is True
    assert [j.name for j in source.current.jobs] == ["a", "b"] and source.version == 2


async def test_run_calls_on_change_only_for_accepted_changes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    _write(path, ["a"])
    source = JobSource(path, interval=0.01)
    seen: list[list[str]] = []
    changed = asyncio.Event()

    def on_change(jobs: JobFile) -> None:
        seen.append([j.name for j in jobs.jobs])
        changed.set()

    async def wait_change() -> None:
        await asyncio.wait_for(changed.wait(), timeout=5)
        changed.clear()

    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop, on_change))
    await wait_change()
    path.write_text("jobs: [")
    for _ in range(200):
        if source.last_error:
            break
        await asyncio.sleep(0.01)
    assert source.last_error is not None and "invalid YAML" in source.last_error
    _write(path, ["b"])
    await wait_change()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert seen == [["a"], ["b"]]
    assert source.version == 2 and source.last_error is None


async def test_run_survives_a_failing_on_change(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    _write(path, ["a"])
    source = JobSource(path, interval=0.01)
    calls = 0

    def on_change(jobs: JobFile) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop, on_change))
    await asyncio.sleep(0.05)
    _write(path, ["b"])
    for _ in range(200):
        if calls == 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert calls == 2


# --- schedules ----------------------------------------------------------------------------------


def test_no_schedule_no_next_run() -> None:
    job = _job(None, on_new_node=True)
    assert next_run(job, _utc(2024, 1, 1)) is None
    assert not due(job, _utc(2024, 1, 1), _utc(2025, 1, 1))


def test_every_15_minutes_utc() -> None:
    job = _job("*/15 * * * *")
    assert next_run(job, _utc(2024, 5, 1, 10, 7, 30)) == _utc(2024, 5, 1, 10, 15)
    assert next_run(job, _utc(2024, 5, 1, 10, 15)) == _utc(2024, 5, 1, 10, 30)  # strictly after
    assert next_run(job, _utc(2024, 5, 1, 23, 50)) == _utc(2024, 5, 2, 0, 0)
    result = next_run(job, datetime(2024, 5, 1, 12, 1, tzinfo=timezone(timedelta(hours=2))))
    assert result == _utc(2024, 5, 1, 10, 15) and result is not None and result.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run(job, datetime(2024, 5, 1))  # naive: refused


def test_berlin_spring_forward_runs_once_after_the_gap() -> None:
    # 2024-03-31: 02:00 CET → 03:00 CEST; 02:30 does not exist
    job = _job("30 2 * * *", "Europe/Berlin")
    assert next_run(job, _utc(2024, 3, 30, 12)) == _utc(2024, 3, 31, 1, 0)  # 03:00 CEST
    assert next_run(job, _utc(2024, 3, 31, 1, 0)) == _utc(2024, 4, 1, 0, 30)  # 02:30 CEST
    assert next_run(job, _utc(2024, 3, 29, 12)) == _utc(2024, 3, 30, 1, 30)  # 02:30 CET


def test_berlin_fall_back_runs_a_fixed_time_once() -> None:
    # 2024-10-27: 03:00 CEST → 02:00 CET; 02:30 happens twice
    job = _job("30 2 * * *", "Europe/Berlin")
    assert next_run(job, _utc(2024, 10, 26, 12)) == _utc(2024, 10, 27, 0, 30)  # first 02:30
    assert next_run(job, _utc(2024, 10, 27, 0, 30)) == _utc(2024, 10, 28, 1, 30)  # not 01:30
    assert next_run(job, _utc(2024, 10, 27, 1, 0)) == _utc(2024, 10, 28, 1, 30)


@pytest.mark.parametrize("day", [31, 27], ids=["spring-forward", "fall-back"])
def test_berlin_every_15_minutes_follows_real_time(day: int) -> None:
    job = _job("*/15 * * * *", "Europe/Berlin")
    month = 3 if day == 31 else 10
    after = _utc(2024, month, day, 0, 20)
    runs = []
    for _ in range(10):
        nxt = next_run(job, after)
        assert nxt is not None
        runs.append(nxt)
        after = nxt
    assert runs == [_utc(2024, month, day, 0, 30) + timedelta(minutes=15 * i) for i in range(10)]


def test_new_york_dst() -> None:
    # 2024-03-10: 02:00 EST → 03:00 EDT; 2024-11-03: 02:00 EDT → 01:00 EST
    job = _job("30 2 * * *", "America/New_York")
    assert next_run(job, _utc(2024, 3, 9, 12)) == _utc(2024, 3, 10, 7, 0)  # 03:00 EDT
    assert next_run(job, _utc(2024, 3, 10, 7, 0)) == _utc(2024, 3, 11, 6, 30)
    job = _job("30 1 * * *", "America/New_York")
    assert next_run(job, _utc(2024, 11, 2, 12)) == _utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    assert next_run(job, _utc(2024, 11, 3, 5, 30)) == _utc(2024, 11, 4, 6, 30)  # once
    hourly = _job("0 * * * *", "America/New_York")
    assert next_run(hourly, _utc(2024, 11, 3, 5, 0)) == _utc(2024, 11, 3, 6, 0)  # 01:00 EST
    assert next_run(hourly, _utc(2024, 11, 3, 6, 0)) == _utc(2024, 11, 3, 7, 0)


def test_daily_job_runs_once_per_local_day_across_a_year() -> None:
    for zone in ("Europe/Berlin", "America/New_York"):
        for schedule in ("30 2 * * *", "30 1 * * *"):
            job = _job(schedule, zone)
            after = _utc(2024, 1, 1)
            days = []
            for _ in range(366):
                nxt = next_run(job, after)
                assert nxt is not None and nxt > after
                days.append(nxt.astimezone(ZoneInfo(zone)).date())
                after = nxt
            assert len(set(days)) == 366, (zone, schedule)  # no day twice, none skipped
            assert days[0].isoformat() == "2024-01-01"


def test_due() -> None:
    job = _job("0 3 * * *")
    assert not due(job, None, _utc(2024, 1, 2))
    assert due(job, _utc(2024, 1, 1, 2, 59), _utc(2024, 1, 1, 3, 0))
    assert not due(job, _utc(2024, 1, 1, 3, 0), _utc(2024, 1, 2, 2, 59))
