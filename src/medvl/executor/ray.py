"""RayExecutor: the tasks of a build run as Ray tasks, on this machine or on a Ray cluster.

Each task is one `ray.remote` call of `run_task(fn, task)` (one CPU each); the ordered bounded window of
`Executor` (base.py) keeps at most `max_in_flight` of them submitted and not yet yielded, and yields their
results in task order, so the outputs are the same as with the local executor, byte for byte. (One
difference a task's caller may meet: NumPy arrays in results come back read-only, from Ray's object store.)
Ray retries a task whose worker or node died (its default `max_retries`), so tasks must be idempotent (write
to a temporary name, then rename); an error raised by the function itself is not retried.

Where Ray runs:
- `address` given (or, failing that, the `RAY_ADDRESS` environment variable, which `ray job submit` and
  KubeRay's RayJob set): `ray.init(address=address)` joins a running cluster ("auto": the cluster this
  machine belongs to, started with `ray start`; "host:6379": the head node's GCS; "ray://host:10001": a Ray
  client connection, which needs `ray[client]`).
- neither: a private local Ray (`address="local"`) with `num_cpus=workers` and no dashboard, even when some
  other Ray runs on the machine.
- Ray already initialised in this process: that session is used as it is.
`close()` calls `ray.shutdown()` only if this executor called `ray.init()`: a private local Ray stops, a
joined cluster is only disconnected from (it keeps running).

Usage statistics are switched off (`RAY_USAGE_STATS_ENABLED=0`, unless the environment already sets it), so a
build never reaches the internet. The machines of a cluster need medvl installed (same version) and the
build's output folder on a filesystem they all mount at the same path (or object storage).

Ray is an optional dependency (`pip install "medvl[ray]"`), imported only when a RayExecutor is made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from medvl.executor.base import Executor, run_task

T = TypeVar("T")
R = TypeVar("R")


def import_ray() -> Any:
    """The `ray` module, or an ImportError that says which extra to install."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("the ray executor needs Ray, which is not installed: pip install \"medvl[ray]\" "
                          f"({type(e).__name__}: {e})") from e
    return ray


class RayExecutor(Executor):
    """Ray tasks with an ordered bounded window. `workers` is the number of tasks meant to run at once (one
    CPU each): the local Ray's `num_cpus`, and on a cluster what sizes the window (`2 * workers + 2` in
    flight, so give about the cluster's CPU count); `workers=0` on a cluster means every CPU it reports.
    `runtime_env` and `init_kwargs` go to `ray.init` (e.g. `{"env_vars": {"PYTHONPATH": ...}}` so that the
    workers can import a module)."""

    name = "ray"

    def __init__(self, workers: int = 1, max_in_flight: int | None = None, *, address: str | None = None,
                 runtime_env: dict[str, Any] | None = None, init_kwargs: dict[str, Any] | None = None):
        super().__init__(workers or 1, max_in_flight)
        ray = import_ray()
        self._ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        if workers == 0 and self.address is None and not ray.is_initialized():
            raise ValueError("executor workers: 0 (every CPU of the cluster) needs a Ray address")
        self.started = False  # True when this executor called ray.init (and so calls ray.shutdown on close)
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {"include_dashboard": False}
            if self.address is not None:
                kwargs["address"] = self.address
            else:
                kwargs.update(address="local", num_cpus=workers)
            if runtime_env:
                kwargs["runtime_env"] = runtime_env
            kwargs.update(init_kwargs or {})
            ray.init(**kwargs)
            self.started = True
        if workers == 0:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            if max_in_flight is None:
                self.max_in_flight = 2 * self.workers + 2
        self._remote = ray.remote(num_cpus=1)(run_task)

    def _submit(self, fn: Callable[[T], R], task: T) -> Any:
        return self._remote.remote(fn, task)

    def _result(self, handle: Any) -> Any:
        return self._ray.get(handle)

    def _cancel(self, handles: list[Any]) -> None:
        for ref in handles:
            # queued tasks are dropped, running ones interrupted; one already finished has nothing to cancel
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)

    def _error_traceback(self, e: BaseException) -> str:
        # RayTaskError / RaySystemError carry the worker's traceback in their text; the driver side adds nothing
        return str(e) if isinstance(e, self._ray.exceptions.RayError) else super()._error_traceback(e)

    def _shutdown(self) -> None:
        if self.started and self._ray.is_initialized():
            self._ray.shutdown()

    def __repr__(self) -> str:
        where = f"address={self.address!r}" if self.address else "local Ray"
        return f"RayExecutor(workers={self.workers}, max_in_flight={self.max_in_flight}, {where})"
