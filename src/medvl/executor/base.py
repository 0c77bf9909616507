"""The executor interface: where tasks run, never what they do.

An executor maps a top-level (picklable) function over an iterable of tasks and yields the results in task
order, like the built-in `map`, while running up to `workers` tasks at once somewhere else (a local process
pool, a Ray cluster). Both implementations share the ordered, bounded window below:

- tasks are pulled from the iterable lazily, one at a time, only when there is room in the window;
- at most `max_in_flight` tasks are submitted and not yet yielded (default `2 * workers + 2`), so memory is
  bounded by the window, not by the number of tasks;
- results come back in task order (a slow task holds back the ones after it, never reorders them);
- a task that raises ends the map with an `ExecutorError` naming the task index, the function, the error and
  the traceback text from the worker; the tasks still in the window are cancelled;
- stopping early (the consumer breaks out of the loop, closes the iterator, or an exception goes through it)
  cancels what is still pending instead of waiting for it, so it never hangs.
"""

from __future__ import annotations

import pickle
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def fn_name(fn: Callable[..., Any]) -> str:
    """`module.qualname` of a function (or of the function inside a functools.partial), for messages."""
    inner = getattr(fn, "func", fn)
    mod = getattr(inner, "__module__", None) or "?"
    return f"{mod}.{getattr(inner, '__qualname__', type(inner).__name__)}"


class ExecutorError(RuntimeError):
    """A task raised (or its worker died): names the task index, the function, the error and the traceback
    text from where the task ran (a pool process or a Ray worker)."""

    def __init__(self, index: int, fn: str, error: str, remote_traceback: str = ""):
        self.index, self.fn, self.error, self.remote_traceback = index, fn, error, remote_traceback
        msg = f"task {index} failed in {fn}: {error}"
        if remote_traceback:
            msg += f"\n--- traceback where the task ran ---\n{remote_traceback.rstrip()}"
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.index, self.fn, self.error, self.remote_traceback))


@dataclass(frozen=True)
class TaskFailure:
    """What `run_task` returns instead of a result when the function raised: the error as text and the
    traceback, so that an exception that cannot be pickled still reaches the caller."""

    error: str
    traceback: str


def run_task(fn: Callable[[T], R], task: T) -> R | TaskFailure:
    """Run one task where the executor placed it; an exception becomes a TaskFailure (picklable text)."""
    try:
        return fn(task)
    except Exception as e:  # noqa: BLE001 - reported to the caller as an ExecutorError with the task index
        return TaskFailure(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())


class Executor:
    """Base class: `map` with the ordered bounded window; subclasses say how one task is submitted, waited
    for and cancelled (`_submit`, `_result`, `_cancel`), or override `map` entirely (the in-process case)."""

    name: str = "base"

    def __init__(self, workers: int = 1, max_in_flight: int | None = None):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"executor workers: must be an integer >= 1, got {workers!r}")
        if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
            raise ValueError(f"executor max_in_flight: must be an integer >= 1 or None, got {max_in_flight!r}")
        self.workers = workers
        self.max_in_flight = max_in_flight if max_in_flight is not None else 2 * workers + 2
        self.closed = False
        self._windows: dict[int, deque[tuple[int, Any]]] = {}  # the windows of the maps still open, by id

    # -- public API ------------------------------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], tasks: Iterable[T], *, window: int | None = None) -> Iterator[R]:
        """Results of `fn(task)` in task order (see the module docstring for the window and the errors).
        `fn` must be picklable by reference (a top-level function, or a functools.partial of one), so that it
        behaves the same on every executor. Nothing is pulled from `tasks` before the first `next()`.
        `window` overrides `max_in_flight` for this map: a short list of tasks of unequal length with small
        results can all be submitted at once, so a long task at the head does not leave workers idle once the
        tasks behind it are done."""
        self._check_open()
        check_picklable(fn)
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"executor map window: must be an integer >= 1 or None, got {window!r}")
        return self._map(fn, tasks, window)

    def close(self) -> None:
        """Cancel the pending tasks of every map still open (asking one of them for its next result then
        raises RuntimeError: results are never cut short silently) and release the workers. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for window in list(self._windows.values()):
            self._cancel([h for _, h in window])
        self._shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers}, max_in_flight={self.max_in_flight})"

    # -- the shared window -----------------------------------------------------------------------------------
    def _map(self, fn: Callable[[T], R], tasks: Iterable[T], window_size: int | None = None) -> Iterator[R]:
        limit = window_size or self.max_in_flight
        it = iter(tasks)
        window: deque[tuple[int, Any]] = deque()  # (task index, handle), oldest first
        name = fn_name(fn)
        next_index, exhausted = 0, False
        self._windows[id(window)] = window
        try:
            while True:
                self._check_open()
                # fill: the window holds at most `limit` (max_in_flight) submitted-but-not-yielded tasks
                while not exhausted and len(window) < limit:
                    try:
                        task = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    self._check_open()
                    window.append((next_index, self._submit(fn, task)))
                    next_index += 1
                if not window:
                    return
                index, handle = window.popleft()
                try:
                    out = self._result(handle)
                except Exception as e:
                    raise ExecutorError(index, name, f"{type(e).__name__}: {e}", self._error_traceback(e)) from e
                if isinstance(out, TaskFailure):
                    raise ExecutorError(index, name, out.error, out.traceback)
                yield out
        finally:
            self._windows.pop(id(window), None)
            if window and not self.closed:  # close() has cancelled them already
                self._cancel([h for _, h in window])

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self!r} is closed")

    # -- what subclasses provide -----------------------------------------------------------------------------
    def _submit(self, fn: Callable[[T], R], task: T) -> Any:
        """Start `run_task(fn, task)` somewhere; return a handle."""
        raise NotImplementedError

    def _result(self, handle: Any) -> Any:
        """Block until the handle's task is done; its return value (a result or a TaskFailure)."""
        raise NotImplementedError

    def _cancel(self, handles: list[Any]) -> None:
        """Cancel tasks that will never be consumed, without waiting for them."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Release workers (called once, by close)."""

    def _error_traceback(self, e: BaseException) -> str:
        """Traceback text for an error raised while waiting for a task (not by the task's function)."""
        return "".join(traceback.format_exception(e))


def check_picklable(fn: Callable[..., Any]) -> None:
    """Raise a TypeError naming the function when it cannot be sent to another process by reference
    (a lambda, a nested function, a method of a local class): the same rule on every executor, so a build
    that works with one worker also works with many, and on Ray."""
    if not callable(fn):
        raise TypeError(f"executor map: fn must be callable, got {type(fn).__name__}")
    try:
        pickle.dumps(fn)
    except Exception as e:
        raise TypeError(f"executor map: {fn_name(fn)} cannot be pickled ({type(e).__name__}: {e}); "
                        "use a top-level function of an importable module (or a functools.partial of one)") from e
