"""Executors (medvl.executor): results in task order and equal to a plain `map`, tasks pulled lazily within a
bounded window, task errors named by index, early stops that cancel instead of waiting, and the Ray path
against a local Ray started once for the module (num_cpus=2)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import executor_tasks as T
import pytest

from medvl.executor import Executor, ExecutorError, LocalExecutor, make_executor

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'medvl[ray]')")

# DICOM reads with delays that make the first tasks finish last on two workers
UNEVEN = [(name, 0.05 * (len(T.DICOM_FILES) - i)) for i, name in enumerate(T.DICOM_FILES)]


def counted(tasks, pulled: list):
    """Yield the tasks, appending each to `pulled` when it is taken."""
    for t in tasks:
        pulled.append(t)
        yield t


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def ray_ex():
    """A local Ray (num_cpus=2) started by the executor; tests/ goes on the workers' PYTHONPATH."""
    import ray

    from medvl.executor.ray import RayExecutor

    if ray.is_initialized():
        pytest.fail("Ray was already running: this fixture must start it")
    ex = RayExecutor(workers=2, runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}},
                     init_kwargs={"log_to_driver": False})
    assert ex.started
    yield ex
    ex.close()
    assert not ray.is_initialized(), "an executor that started Ray shuts it down on close"


def check_window(ex: Executor, n: int = 20) -> None:
    """While consuming, never more than max_in_flight tasks pulled and not yet yielded; the window fills."""
    pulled: list = []
    it = ex.map(T.sleep_then_square, counted([(i, 0.01) for i in range(n)], pulled))
    assert pulled == [], "nothing is pulled before the first result is asked for"
    out = []
    for k, r in enumerate(it):
        if k == 0:
            assert len(pulled) == min(n, ex.max_in_flight), "the window is filled before waiting"
        assert len(pulled) <= k + ex.max_in_flight
        out.append(r)
    assert out == [i * i for i in range(n)]


def check_early_stop(ex: Executor) -> None:
    """Stopping after one result, or on a task error, cancels what is pending (up to 20 tasks of 1 s on two
    workers, ~10 s of work): the next map is not stuck behind it."""
    assert ex.max_in_flight >= 20
    it = ex.map(T.sleep_then_square, ((i, 1.0) for i in range(40)))
    assert next(it) == 0
    t0 = time.monotonic()
    it.close()
    assert list(ex.map(T.sleep_then_square, [(i, 0.0) for i in range(4)])) == [0, 1, 4, 9]
    assert time.monotonic() - t0 < 4.0
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match="task 0 failed"):  # task 0 fails at once while the others sleep
        list(ex.map(T.sleep_then_square, [("x", 0.0)] + [(i, 1.0) for i in range(1, 40)]))
    assert list(ex.map(T.sleep_then_square, [(3, 0.0)])) == [9]
    assert time.monotonic() - t0 < 4.0


def check_task_error(ex: Executor) -> None:
    it = ex.map(T.fail_on_three, range(8))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ExecutorError) as ei:
        next(it)
    e = ei.value
    assert e.index == 3 and e.fn == "executor_tasks.fail_on_three"
    assert e.error == "ValueError: bad value 3"
    assert "task 3 failed in executor_tasks.fail_on_three: ValueError: bad value 3" in str(e)
    assert 'raise ValueError(f"bad value {value}")' in e.remote_traceback  # the worker's traceback text


# -- local -------------------------------------------------------------------------------------------------------
def test_pool_results_in_task_order_equal_plain_map(pool):
    expected = list(map(T.dicom_pixels, UNEVEN))
    got = list(pool.map(T.dicom_pixels, UNEVEN))
    assert got == expected and json.dumps(got) == json.dumps(expected)  # byte for byte as written
    assert len({r["sha256"] for r in got}) == len(UNEVEN)


def test_pool_runs_in_other_processes_and_is_reused(pool):
    first = set(pool.map(T.pid, range(12)))
    second = set(pool.map(T.pid, range(12)))
    assert os.getpid() not in first and 1 <= len(first) <= 2
    assert second <= first, "the second map reuses the pool's processes"


@pytest.mark.parametrize("max_in_flight", [None, 3])
def test_pool_window_is_lazy_and_bounded(pool, max_in_flight):
    if max_in_flight is None:
        assert pool.max_in_flight == 2 * 2 + 2
        check_window(pool)
    else:
        with LocalExecutor(workers=2, max_in_flight=max_in_flight) as ex:
            check_window(ex)


@pytest.mark.parametrize("window", [2, 20])
def test_map_window_overrides_max_in_flight_for_one_map(pool, window):
    """map(..., window=w) keeps w tasks in flight (all 20 at once when w covers them) and results stay in order;
    the executor's own max_in_flight is unchanged for the next map."""
    pulled: list = []
    it = pool.map(T.sleep_then_square, counted([(i, 0.01) for i in range(20)], pulled), window=window)
    out = []
    for k, r in enumerate(it):
        if k == 0:
            assert len(pulled) == window
        assert len(pulled) <= k + window
        out.append(r)
    assert out == [i * i for i in range(20)]
    check_window(pool)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="window"):
            pool.map(T.sleep_then_square, [], window=bad)


def test_pool_task_error_names_index_fn_and_traceback(pool):
    check_task_error(pool)
    assert list(pool.map(T.fail_on_three, [0, 1])) == [0, 1], "the executor is usable after a task error"


def test_pool_error_that_cannot_unpickle_still_reported(pool):
    with pytest.raises(ExecutorError, match=r"task 2 failed in executor_tasks.raise_two_arg: TwoArgError: left/right"):
        list(pool.map(T.raise_two_arg, range(5)))
    assert list(pool.map(T.raise_two_arg, [0, 1])) == [0, 1]


def test_pool_early_stop_and_error_do_not_wait_for_the_rest():
    with LocalExecutor(workers=2, max_in_flight=20) as ex:
        check_early_stop(ex)


def test_close_with_an_open_map_cancels_and_never_truncates_silently():
    ex = LocalExecutor(workers=2)
    it = ex.map(T.sleep_then_square, ((i, 0.5) for i in range(40)))
    assert next(it) == 0
    t0 = time.monotonic()
    ex.close()
    assert time.monotonic() - t0 < 2.0, "close waits only for the tasks already running"
    with pytest.raises(RuntimeError, match="closed"):
        next(it)
    with pytest.raises(RuntimeError, match="closed"):
        ex.map(T.pid, [1])


def test_dead_worker_is_an_error_with_the_index_and_the_next_map_gets_a_new_pool():
    with LocalExecutor(workers=2) as ex:
        with pytest.raises(ExecutorError, match="BrokenProcessPool") as ei:
            list(ex.map(T.die_on_one, range(4)))
        assert ei.value.index in (0, 1)
        assert list(ex.map(T.die_on_one, [0, 2, 3])) == [0, 2, 3]


def test_pool_workers_end_when_the_build_process_is_killed(tmp_path):
    """kill -9 of the process that owns the pool (a build being stopped) does not leave its workers behind."""
    import signal
    import subprocess

    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import executor_tasks as T, time\n"
              "from medvl.executor import LocalExecutor\n"
              "if __name__ == '__main__':\n"
              "    ex = LocalExecutor(workers=2)\n"
              "    print(sorted(set(ex.map(T.pid, range(8)))), flush=True)\n"
              "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(p.stdout.readline())
        assert len(pids) >= 1 and p.pid not in pids
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 10
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [w for w in alive if _running(w)]
        time.sleep(0.2)
    assert alive == [], f"pool workers {alive} outlived their parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_one_worker_runs_in_process_lazily():
    ex = make_executor("local", 1)
    assert isinstance(ex, LocalExecutor) and ex.in_process and ex.name == "local"
    assert set(ex.map(T.pid, range(3))) == {os.getpid()}
    pulled: list = []
    for k, _ in enumerate(ex.map(T.pid, counted(range(5), pulled))):
        assert len(pulled) == k + 1
    with pytest.raises(ExecutorError) as ei:
        list(ex.map(T.fail_on_three, range(5)))
    assert ei.value.index == 3 and isinstance(ei.value.__cause__, ValueError)
    assert list(ex.map(T.dicom_pixels, UNEVEN[:3])) == list(map(T.dicom_pixels, UNEVEN[:3]))


def test_functions_that_cannot_be_sent_are_refused_on_every_executor():
    def local_fn(x):
        return x

    for ex in (LocalExecutor(1), LocalExecutor(2)):
        for fn in (lambda x: x, local_fn):
            with pytest.raises(TypeError, match="cannot be pickled.*top-level function"):
                ex.map(fn, [1])
        ex.close()


def test_make_executor_errors_name_the_key_and_allowed_values():
    with pytest.raises(ValueError, match=r"unknown kind 'dask'; allowed values: local, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="ray_address is only used with the 'ray' executor"):
        make_executor("local", 2, ray_address="auto")
    with pytest.raises(ValueError, match="workers: must be an integer >= 1"):
        make_executor("local", 0)
    with pytest.raises(ValueError, match="max_in_flight"):
        make_executor("local", 2, max_in_flight=0)
    with pytest.raises(ValueError, match="start_method: 'thread' is not one of"):
        make_executor("local", 2, start_method="thread")


def test_missing_ray_names_the_extra(monkeypatch):
    from medvl.executor.ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    with pytest.raises(ImportError, match=r'pip install "medvl\[ray\]"'):
        import_ray()


# -- ray ---------------------------------------------------------------------------------------------------------
@needs_ray
def test_ray_all_cluster_cpus_needs_an_address(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match=r"workers: 0 \(every CPU of the cluster\) needs a Ray address"):
        make_executor("ray", 0)
    assert not ray.is_initialized()


@needs_ray
def test_ray_results_equal_local_and_plain_map(ray_ex, pool):
    expected = list(map(T.dicom_pixels, UNEVEN))
    got = list(ray_ex.map(T.dicom_pixels, UNEVEN))
    assert json.dumps(got) == json.dumps(expected) == json.dumps(list(pool.map(T.dicom_pixels, UNEVEN)))
    assert os.getpid() not in set(ray_ex.map(T.pid, range(4)))  # map called again on the same executor


@needs_ray
def test_ray_window_error_and_early_stop(ray_ex):
    assert ray_ex.name == "ray" and ray_ex.max_in_flight == 6
    check_window(ray_ex)
    check_task_error(ray_ex)
    with make_executor("ray", 2, max_in_flight=20) as wide:  # joins the fixture's Ray
        check_early_stop(wide)


@needs_ray
def test_ray_joins_a_running_session_without_shutting_it_down(ray_ex):
    import ray

    other = make_executor("ray", 2)
    assert not other.started
    assert list(other.map(T.fail_on_three, [0, 1, 2])) == [0, 1, 2]
    other.close()
    assert ray.is_initialized(), "closing an executor that did not start Ray leaves Ray running"


def test_prestarted_pool_is_adopted_with_its_modules_imported_and_discarded_when_unused():
    """`prestart` starts the workers early (`medvl build` does before it parses the recipe) and has them import the
    given modules; the next LocalExecutor of that size uses those very processes. A prestarted pool nobody adopts
    is shut down by `discard_prestarted`."""
    from medvl.executor import local

    local.prestart(2, ("medvl.sources.read",))
    pool = local._PRESTARTED[(2, "spawn")]
    with LocalExecutor(2) as ex:
        got = list(ex.map(T.loaded, [("medvl.sources.read", "medvl.generate.stage")] * 8))
        assert ex._pool is pool and not local._PRESTARTED
        pids = {p for p, _ in got}
        assert os.getpid() not in pids and pids <= set(pool._processes)  # the prestarted processes ran them
    assert all(flags[0] for _, flags in got)  # imported by the warm-up task
    assert not any(flags[1] for _, flags in got)  # nothing else was
    local.prestart(1)  # one worker runs in-process: nothing to start
    assert not local._PRESTARTED
    local.prestart(3)
    unused = local._PRESTARTED[(3, "spawn")]
    with LocalExecutor(2) as ex:  # another size: its own pool, the prestarted one is left alone
        assert len(set(ex.map(T.pid, range(4)))) >= 1 and ex._pool is not unused
    local.discard_prestarted()
    assert not local._PRESTARTED and unused._shutdown_thread


def test_warm_has_idle_workers_import_modules_without_waiting():
    """`warm` hands each worker of the pool a warm-up task importing the modules (a build calls it during curation,
    when the workers idle) and returns at once; in-process executors ignore it."""
    with LocalExecutor(2) as ex:
        list(ex.map(T.pid, range(2)))  # the pool exists
        ex.warm(("colorsys",))
        got = list(ex.map(T.loaded, [("colorsys", "wave")] * 8))
    assert any(flags[0] for _, flags in got)  # imported by a warm-up task, never by the tasks themselves
    assert not any(flags[1] for _, flags in got)
    with LocalExecutor(1) as one:
        one.warm(("wave",))
        assert list(one.map(T.loaded, [("wave",)])) == [(os.getpid(), ["wave" in sys.modules])]
