"""The local lab: containerd (CRI) plus registries on loopback, for the demo, tests and benchmarks.

Run ``python -m lab up`` / ``python -m lab down`` / ``python -m lab env`` (as root).
"""

from lab.info import LabInfo

__all__ = ["LabInfo"]
