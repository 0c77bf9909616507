"""Executors: where the tasks of a build run (this machine's processes, or Ray), never what they do.

One interface (`Executor.map`: results in task order, tasks pulled lazily, a bounded number in flight) and two
implementations: `local` (a process pool; in-process with one worker) and `ray` (Ray tasks, locally or on a
cluster; needs the `medvl[ray]` extra). Stages hand the executor top-level functions and picklable tasks.
"""

from __future__ import annotations

from typing import Any

from medvl.executor.base import Executor, ExecutorError
from medvl.executor.local import LocalExecutor

KINDS = ("local", "ray")

__all__ = ["KINDS", "Executor", "ExecutorError", "LocalExecutor", "make_executor"]


def make_executor(kind: str = "local", workers: int = 1, *, ray_address: str | None = None,
                  max_in_flight: int | None = None, **options: Any) -> Executor:
    """An executor by name: "local" (process pool, in-process when workers == 1) or "ray" (Ray tasks; a local
    Ray with `num_cpus=workers`, or the cluster at `ray_address`, e.g. "auto"). `options` go to the class
    (`start_method` for local; `runtime_env`, `init_kwargs` for ray)."""
    if kind == "local":
        if ray_address is not None:
            raise ValueError("executor: ray_address is only used with the 'ray' executor, not 'local'")
        return LocalExecutor(workers, max_in_flight, **options)
    if kind == "ray":
        from medvl.executor.ray import RayExecutor  # imports ray lazily

        return RayExecutor(workers, max_in_flight, address=ray_address, **options)
    raise ValueError(f"executor: unknown kind {kind!r}; allowed values: {', '.join(KINDS)}")
