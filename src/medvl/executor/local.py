"""LocalExecutor: the tasks of a build run on this machine.

`workers == 1` runs every task in this process, one at a time, when its result is asked for (no pool, no
pickling of tasks or results; errors keep their original exception as `__cause__`).

`workers > 1` runs them in a `concurrent.futures.ProcessPoolExecutor` started with the "spawn" method by
default (fresh interpreters: safe when this process holds threads, e.g. from pyarrow, and the same on Linux,
macOS and Windows). The pool starts on the first task (or earlier: `prestart`, which `medvl build` calls before it
imports and parses the recipe) and is reused by every later `map` on the executor, so worker start-up (importing
medvl, ~0.7 s per process) is paid once per build, overlapping the main process's own. Tasks go through the ordered
bounded window of `Executor` (base.py): at most `max_in_flight` submitted and not yet yielded.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from medvl.executor.base import Executor, ExecutorError, fn_name, run_task

T = TypeVar("T")
R = TypeVar("R")

START_METHODS = ("spawn", "forkserver", "fork")


def watch_parent(parent: int, interval: float = 1.0) -> None:
    """Pool worker initializer: end this worker when the process that started the pool is gone (killed with
    SIGKILL, say), instead of leaving it behind as an orphan. A daemon thread checks the parent pid."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="medvl-watch-parent", daemon=True).start()
    # at exit, what is left is freed with the process: freezing it first keeps the interpreter's exit from walking
    # every object (~120 ms with numpy, Pillow and pyarrow loaded), which the pool's shutdown waits for
    atexit.register(gc.freeze)


_PRESTARTED: dict[tuple[int, str], ProcessPoolExecutor] = {}  # pools started early, adopted by the first executor


def _import_modules(modules: tuple[str, ...]) -> None:
    """Warm-up task of a prestarted worker: import what its first real tasks will need."""
    import importlib

    for m in modules:
        importlib.import_module(m)
    gc.freeze()  # the modules live as long as the worker: later collections need not walk their objects


def _new_pool(workers: int, start_method: str) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method),
                               initializer=watch_parent, initargs=(os.getpid(),))


def prestart(workers: int, modules: tuple[str, ...] = (), start_method: str = "spawn") -> None:
    """Start the pool of a ``LocalExecutor(workers, start_method=...)`` this process will create later, and have
    each worker import ``modules`` meanwhile, so the workers' start-up (a fresh interpreter importing numpy,
    Pillow, pydantic and medvl: ~0.7 s here) overlaps the caller's own (``medvl build`` imports and parses the
    recipe, prepares the output folder and lists the first units in that time). Only an optimization: the first
    matching executor adopts the pool, any other starts its own; :func:`discard_prestarted` ends an unused one."""
    if workers < 2 or (workers, start_method) in _PRESTARTED:
        return
    pool = _new_pool(workers, start_method)
    for _ in range(workers):  # one task per worker: a spawn pool starts a process per submitted task
        pool.submit(_import_modules, tuple(modules))
    _PRESTARTED[(workers, start_method)] = pool


def discard_prestarted() -> None:
    """Shut down prestarted pools no executor adopted (the build stopped before it needed them)."""
    while _PRESTARTED:
        _PRESTARTED.popitem()[1].shutdown(wait=False, cancel_futures=True)


class LocalExecutor(Executor):
    """A process pool on this machine (in-process when workers == 1). `start_method` is the multiprocessing
    start method of the pool: "spawn" (default), "forkserver" or "fork"."""

    name = "local"

    def __init__(self, workers: int = 1, max_in_flight: int | None = None, *, start_method: str = "spawn"):
        super().__init__(workers, max_in_flight)
        if start_method not in START_METHODS:
            raise ValueError(f"executor start_method: {start_method!r} is not one of {', '.join(START_METHODS)}")
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"executor start_method: {start_method!r} is not available on this platform "
                             f"(available: {', '.join(multiprocessing.get_all_start_methods())})")
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    @property
    def in_process(self) -> bool:
        """True when tasks run in this process (workers == 1)."""
        return self.workers == 1

    def _map(self, fn: Callable[[T], R], tasks: Iterable[T], window_size: int | None = None) -> Iterator[R]:
        if not self.in_process:
            yield from super()._map(fn, tasks, window_size)
            return
        name = fn_name(fn)
        for index, task in enumerate(tasks):
            self._check_open()
            try:
                out = fn(task)
            except Exception as e:
                raise ExecutorError(index, name, f"{type(e).__name__}: {e}", traceback.format_exc()) from e
            yield out
            self._check_open()

    def warm(self, modules: tuple[str, ...]) -> None:
        """Have the pool's workers import ``modules`` now, without waiting: one warm-up task per worker, run by
        whichever worker is free (a stage calls this while the workers would idle, so later tasks do not pay
        for the imports). Nothing happens in-process or before the pool exists."""
        if self.in_process or self._pool is None or not modules or self.closed:
            return
        for _ in range(self.workers):
            self._pool.submit(_import_modules, tuple(modules))

    # -- pool ------------------------------------------------------------------------------------------------
    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = (_PRESTARTED.pop((self.workers, self.start_method), None)
                          or _new_pool(self.workers, self.start_method))
        return self._pool

    def _submit(self, fn: Callable[[T], R], task: T) -> Future:
        try:
            return self._get_pool().submit(run_task, fn, task)
        except BrokenProcessPool:  # a worker died in an earlier map: start a fresh pool for this one
            self._drop_pool()
            return self._get_pool().submit(run_task, fn, task)

    def _result(self, handle: Future) -> Any:
        try:
            return handle.result()
        except BrokenProcessPool:
            self._drop_pool()  # the next map starts a new pool instead of failing forever
            raise

    def _cancel(self, handles: list[Future]) -> None:
        # pending futures are dropped; the few already handed to a process finish there and are discarded
        for f in handles:
            f.cancel()

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _shutdown(self) -> None:
        if self._pool is not None:
            # waits only for the tasks already running in a process (at most `workers` + 1); queued ones are
            # cancelled
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __repr__(self) -> str:
        mode = "in-process" if self.in_process else f"{self.start_method} pool"
        return f"LocalExecutor(workers={self.workers}, max_in_flight={self.max_in_flight}, {mode})"
