"""Scenario files (``lab.scenario.parse``): hostile input is a clear LabError, never a traceback."""

from __future__ import annotations

import pytest

from lab import scenario
from lab.errors import LabError


def test_a_scenario_parses_into_sorted_plans() -> None:
    plans = scenario.parse(
        '[nodes.node-10]\nfaults = ["dead-mirror"]\n'
        '[nodes.node-2]\nruntime = "2"\nfaults = ["dns-nxdomain", "dns-nxdomain", "ca-missing"]\n'
        "[nodes.node-1]\n"
    )
    assert plans == [
        scenario.NodePlan("node-1", "1.6", ()),
        scenario.NodePlan("node-2", "2", ("dns-nxdomain", "ca-missing")),
        scenario.NodePlan("node-10", "1.6", ("dead-mirror",)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\[nodes"),
        ("nodes = 3", "no \\[nodes"),
        ("[nodes.web-1]", "not a lab node name"),
        ("[nodes.node-0]", "not a lab node name"),
        ("[nodes.node-201]", "not a lab node name"),
        ('[nodes.node-1]\nruntime = "1.5"', "unknown containerd runtime"),
        ("[nodes.node-1]\nruntime = 2", "runtime must be a string"),
        ('[nodes.node-1]\nfaults = "dns-nxdomain"', "must be a list"),
        ('[nodes.node-1]\nfaults = ["flood"]', "unknown fault 'flood'"),
        ("[nodes.node-1]\ncolour = 1", "unknown key"),
        ("[other]", "unknown key"),
        ("[nodes.node-1", "scenario file"),
        ("# x\n" * 20000, "larger than"),
    ],
)
def test_bad_scenarios_are_named(text: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        scenario.parse(text)
