"""Workloads: seeded generators of process-level steps, and imported program traces.

A workload is a list of :class:`~foliosim.workloads.steps.Step` objects (JSON
Lines on disk) that the evaluator runs on the simulated machine. Generators
are deterministic functions of their parameters and seed.
"""

from foliosim.workloads.generators import WORKLOADS, build_workload, default_params
from foliosim.workloads.steps import Step, WorkloadError, dump_steps, load_steps

__all__ = ["WORKLOADS", "Step", "WorkloadError", "build_workload", "default_params", "dump_steps", "load_steps"]
