"""`medvl build` at scale, measured on real build subprocesses over the synthetic corpus of
``benchmarks/make_scale_corpus.py`` (N distinct images in NIH labels + box tables, N/1000 Decathlon volumes).

Measures (targets of issue 8 in brackets):
- memory: peak RSS of the build process and, separately, the largest peak of any process below it (pool
  workers, Ray processes), at each size of ``--sizes`` with 2 workers; growth = largest size / smallest [<= 1.3x];
- throughput: units/s with ``--workers 1`` and ``--workers 2`` at ``--at`` (default: the smallest size) [>= 1.8x];
- Ray: ``--executor ray --workers 2`` against the local pool's 2 workers [>= 0.8x] (skipped without ray or
  without the CLI option);
- resume: an uninterrupted run takes T; a fresh run is killed with SIGKILL (its whole process group) at T/2 and
  finished with ``--resume``; (T/2 + resume time) / T [<= 1.15x], and whether every output file
  (manifest.json included) has the same sha256 as the uninterrupted run's;
- extrapolation to 5.5M images on 64 cores from the per-stage times of ``--timings`` (model printed below the
  table).

Peak RSS is read from /proc (VmHWM, the kernel's high-water mark of each process) every 0.1 s over the build's
process tree, so Linux only. Features the installed CLI lacks (``--executor``, ``--resume``, ``--timings``,
detected from ``medvl build --help``) are skipped with a message.

    python benchmarks/bench_scale.py [--sizes 10000,100000] [--quick] [--work DIR] [--json results.json]"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_IMAGES, TARGET_CORES = 5_500_000, 64
STAGES = ("read", "curate", "generate", "export")
CLI = [sys.executable, "-m", "medvl.cli.main", "build"]


# ------------------------------------------------------------------------------------------- process tree
def _hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM, KiB); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (scanning /proc for parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class TreeMemory(threading.Thread):
    """Polls the peak RSS of a process and of its descendants every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.main_kib = self.worker_kib = 0
        self.workers_seen: set[int] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.main_kib = max(self.main_kib, _hwm_kib(self.pid))
            for pid in _descendants(self.pid):
                self.workers_seen.add(pid)
                self.worker_kib = max(self.worker_kib, _hwm_kib(pid))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# ------------------------------------------------------------------------------------------------- builds
class Cli:
    """What the installed `medvl build` supports, from its --help."""

    def __init__(self):
        text = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
        self.out_option = "--out" in text
        self.executor = "--executor" in text
        self.resume = "--resume" in text
        self.timings = "--timings" in text
        self.ray = importlib.util.find_spec("ray") is not None

    def command(self, recipe: Path, out: Path, workers: int, *, executor: str | None = None, resume: bool = False,
                timings: Path | None = None) -> list[str]:
        cmd = [*CLI, str(recipe), *(["-o", str(out)] if self.out_option else [str(out)]), "--workers", str(workers)]
        if executor:
            cmd += ["--executor", executor]
        if resume:
            cmd.append("--resume")
        if timings is not None and self.timings:
            cmd += ["--timings", str(timings)]
        return cmd


def machine_load() -> dict[str, float]:
    """1-minute load average and, where the kernel reports it, the share of time some task waited for a CPU
    (/proc/pressure/cpu avg10, percent)."""
    out = {"load1": os.getloadavg()[0]}
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        out["cpu_pressure"] = float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        pass
    return out


def run_build(cmd: list[str], log: Path, kill_after: float | None = None) -> dict[str, Any]:
    """Run one build in its own session and process group; -> wall seconds, CPU seconds of the build and its
    reaped workers, return code, peak RSS (MiB) of the build and of its largest descendant, machine load before.
    ``kill_after``: SIGKILL the whole group after that many seconds."""
    # write back what earlier runs left in the page cache (GBs after a 100k build, or a removed output
    # folder) before the clock starts, so one run's disk traffic is not timed in the next
    os.sync()
    time.sleep(1)
    load = machine_load()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("ab") as lf:
        lf.write(("\n$ " + " ".join(cmd) + "\n").encode())
        lf.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TERM": "dumb", "COLUMNS": "120"})
        mem = TreeMemory(proc.pid)
        mem.start()
        killed = False
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the machine dies: the build and every worker at once
            proc.wait()
            killed = True
        wall = time.perf_counter() - t0
        mem.stop()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 and not killed:
        raise RuntimeError(f"build failed (exit {proc.returncode}); see {log}")
    return {"wall_s": wall, "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            "rc": proc.returncode, "killed": killed, "main_rss_mib": mem.main_kib / 1024,
            "worker_rss_mib": mem.worker_kib / 1024, **load}


def output_digests(out: Path) -> dict[str, str]:
    """sha256 of every output file (the work folder of shards and journal left out)."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".medvl-work" not in p.relative_to(out).parts}


def units_of(out: Path, timings: Path | None) -> int:
    if timings is not None and timings.is_file():
        return int(json.loads(timings.read_text())["units"])
    units = json.loads((out / "summary.json").read_text())["units"]
    return int(units["input"] if isinstance(units, dict) else units)


# --------------------------------------------------------------------------------------------- benchmark
def corpus(work: Path, images: int) -> tuple[Path, int]:
    """The scale corpus of ``images`` images (and images // 1000 volumes), made once per work folder;
    -> (its recipe, its number of source units: table rows, boxed images and volumes)."""
    d = work / f"corpus_{images}"
    if (d / "corpus.json").is_file():
        info = json.loads((d / "corpus.json").read_text())
        return d / "recipe.yaml", info["images"] + info["boxed_images"] + info["volumes"]
    spec = importlib.util.spec_from_file_location("make_scale_corpus", HERE / "make_scale_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its writer processes pickle its functions by module name
    spec.loader.exec_module(mod)
    if d.exists():
        shutil.rmtree(d)
    info = mod.make_corpus(d, images=images, volumes=max(1, images // 1000))
    print(f"corpus {images}: {info['images']} images, {info['volumes']} volumes, {info['boxed_images']} boxed, "
          f"written in {info['seconds']:.0f} s", flush=True)
    return d / "recipe.yaml", info["images"] + info["boxed_images"] + info["volumes"]


def measured_build(cli: Cli, corpus_: tuple[Path, int], work: Path, tag: str, workers: int,
                   executor: str | None = None, kill_after: float | None = None, resume: bool = False
                   ) -> dict[str, Any]:
    """One build of a corpus (recipe, units), timed and measured; units/s counts the corpus's source units
    (the build's own count is kept as ``build_units``)."""
    recipe, units = corpus_
    out, timings = work / f"out_{tag}", work / f"timings_{tag}.json"
    if not resume and out.exists():
        shutil.rmtree(out)
    timings.unlink(missing_ok=True)
    r = run_build(cli.command(recipe, out, workers, executor=executor, resume=resume, timings=timings),
                  work / "builds.log", kill_after)
    if not r["killed"]:
        r["units"], r["build_units"] = units, units_of(out, timings)
        r["units_per_s"] = units / r["wall_s"]
        if timings.is_file():
            r["timings"] = json.loads(timings.read_text())
    r["out"] = out
    print(f"  {tag:<16} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU  main {r['main_rss_mib']:5.0f} MiB  "
          f"worker {r['worker_rss_mib']:5.0f} MiB  load {r['load1']:4.1f}"
          + ("  (killed)" if r["killed"] else f"  {r['units']} units"), flush=True)
    if not r["killed"] and r["build_units"] != units:
        print(f"  warning: the build counted {r['build_units']} units, the corpus has {units}", flush=True)
    return r


def best_of(repeat: int, *args: Any, **kw: Any) -> dict[str, Any]:
    """``measured_build(*args, **kw)`` ``repeat`` times: the fastest run, with the largest peak RSS of any."""
    runs = [measured_build(*args, **kw) for _ in range(repeat)]
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    best["main_rss_mib"] = max(r["main_rss_mib"] for r in runs)
    best["worker_rss_mib"] = max(r["worker_rss_mib"] for r in runs)
    best["walls_s"] = [r["wall_s"] for r in runs]
    return best


def extrapolate(big: dict[str, Any], one: dict[str, Any] | None, two: dict[str, Any] | None, images: int
                ) -> dict[str, Any] | None:
    """Per stage: time per image from the largest run (2 workers) times 5.5M images; cores by Amdahl's law
    with the stage's serial fraction f measured from the 1- and 2-worker runs (t2 / t1 = f + (1 - f) / 2,
    so f = 2 t2 / t1 - 1, clipped to [0, 1]); without them read/generate count as parallel (f = 0) and
    curate/export as serial (f = 1)."""
    if "timings" not in big:
        return None
    out: dict[str, Any] = {"stages": {}}
    for s in STAGES:
        t_big = float(big["timings"].get(s, 0.0))
        if one and two and "timings" in one and "timings" in two and one["timings"].get(s):
            f = min(1.0, max(0.0, 2 * two["timings"][s] / one["timings"][s] - 1))
        else:
            f = 0.0 if s in ("read", "generate") else 1.0
        per_core_work = t_big * (TARGET_IMAGES / images) / (f + (1 - f) / 2)  # one-core time at 5.5M
        t = per_core_work * (f + (1 - f) / TARGET_CORES)
        out["stages"][s] = {"measured_s": t_big, "serial_fraction": round(f, 3), "extrapolated_s": t}
    out["total_s"] = sum(v["extrapolated_s"] for v in out["stages"].values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="image counts, comma-separated (default 10000,100000)")
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 1000,5000")
    ap.add_argument("--at", type=int, default=None, help="size for throughput, Ray and resume (default: smallest)")
    ap.add_argument("--work", type=Path, default=None, help="folder for corpora and builds (default: a temp folder, "
                    "removed at the end); corpora in it are reused")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration compared at --at (1 and 2 "
                    "workers, Ray); the fastest counts (default 1)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    a = ap.parse_args(argv)
    sizes = [1000, 5000] if a.quick else sorted(int(s) for s in a.sizes.split(","))
    at = a.at or sizes[0]
    cli = Cli()
    load = machine_load()
    if load["load1"] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine is busy (load {load['load1']:.1f} on {os.cpu_count()} cores"
              + (f", CPU pressure {load['cpu_pressure']:.0f}%" if "cpu_pressure" in load else "")
              + "): wall times and speed-ups are not meaningful; peak RSS and output identity are", flush=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="medvl-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"sizes": sizes, "at": at, "cores": os.cpu_count(), "cli": vars(cli).copy(),
                           "load_at_start": load, "repeat": a.repeat}
    runs: dict[str, dict[str, Any]] = {}
    try:
        for n in sorted(set(sizes) | {at}):
            c = corpus(work, n)
            runs[f"local2_{n}"] = best_of(a.repeat if n == at else 1, cli, c, work, f"local2_{n}", 2)
        c_at = corpus(work, at)
        runs[f"local1_{at}"] = best_of(a.repeat, cli, c_at, work, f"local1_{at}", 1)
        if cli.executor and cli.ray:
            runs[f"ray2_{at}"] = best_of(a.repeat, cli, c_at, work, f"ray2_{at}", 2, executor="ray")
        if cli.resume:
            base = runs[f"local2_{at}"]
            digests = output_digests(base["out"])
            killed = measured_build(cli, c_at, work, f"resume_{at}", 2, kill_after=base["wall_s"] / 2)
            resumed = measured_build(cli, c_at, work, f"resume_{at}", 2, resume=True)
            res["resume"] = {"uninterrupted_s": base["wall_s"], "killed_at_s": killed["wall_s"],
                             "resume_s": resumed["wall_s"], "killed": killed["killed"],
                             "ratio": (killed["wall_s"] + resumed["wall_s"]) / base["wall_s"],
                             "identical": output_digests(resumed["out"]) == digests,
                             "manifest_identical": (resumed["out"] / "manifest.json").read_bytes()
                             == (base["out"] / "manifest.json").read_bytes()}
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)

    small, big = runs[f"local2_{sizes[0]}"], runs[f"local2_{sizes[-1]}"]
    res["memory"] = {"units": [runs[f"local2_{n}"]["units"] for n in sizes],
                     "main_mib": [runs[f"local2_{n}"]["main_rss_mib"] for n in sizes],
                     "worker_mib": [runs[f"local2_{n}"]["worker_rss_mib"] for n in sizes],
                     "main_growth": big["main_rss_mib"] / small["main_rss_mib"],
                     "worker_growth": big["worker_rss_mib"] / max(small["worker_rss_mib"], 1e-9)}
    one, two = runs[f"local1_{at}"], runs[f"local2_{at}"]
    res["throughput"] = {"units": two["units"], "w1_units_per_s": one["units_per_s"],
                         "w2_units_per_s": two["units_per_s"], "speedup": one["wall_s"] / two["wall_s"],
                         "w1_cpu_s": one["cpu_s"], "w2_cpu_s": two["cpu_s"]}
    if f"ray2_{at}" in runs:
        ray = runs[f"ray2_{at}"]
        res["ray"] = {"units_per_s": ray["units_per_s"], "ratio_to_local": two["wall_s"] / ray["wall_s"],
                      "worker_rss_mib": ray["worker_rss_mib"]}
    res["extrapolation"] = extrapolate(big, one, two, sizes[-1])
    res["runs"] = {k: {kk: (str(vv) if isinstance(vv, Path) else vv) for kk, vv in v.items()} for k, v in runs.items()}
    report(res, cli)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


def report(res: dict[str, Any], cli: Cli) -> None:
    m, t = res["memory"], res["throughput"]
    print(f"\n{'measure':<44} {'value':>28} {'target':>10}")
    sizes = " / ".join(f"{u}" for u in m["units"])
    print(f"{'peak RSS main, MiB (units ' + sizes + ')':<44} "
          f"{' / '.join(f'{x:.0f}' for x in m['main_mib']):>28} {'':>10}")
    print(f"{'peak RSS largest worker, MiB':<44} {' / '.join(f'{x:.0f}' for x in m['worker_mib']):>28} {'':>10}")
    print(f"{'growth main / worker':<44} {m['main_growth']:>13.2f}x / {m['worker_growth']:.2f}x {'<= 1.3x':>10}")
    print(f"{'throughput units/s, 1 / 2 workers':<44} "
          f"{t['w1_units_per_s']:>13.1f} / {t['w2_units_per_s']:.1f} {'':>10}")
    print(f"{'speed-up 2 workers':<44} {t['speedup']:>27.2f}x {'>= 1.8x':>10}")
    print(f"{'CPU seconds of the build, 1 / 2 workers':<44} {t['w1_cpu_s']:>13.1f} / {t['w2_cpu_s']:.1f} {'':>10}")
    if "ray" in res:
        print(f"{'ray / local (2 workers), throughput ratio':<44} {res['ray']['ratio_to_local']:>27.2f}x {'>= 0.8x':>10}")
    else:
        why = "ray not installed" if not cli.ray else "`medvl build` has no --executor"
        print(f"{'ray / local':<44} {'skipped: ' + why:>28}")
    if "resume" in res:
        r = res["resume"]
        print(f"{'kill -9 at 50% + --resume, total / uninterrupted':<44} {r['ratio']:>27.2f}x {'<= 1.15x':>10}")
        print(f"{'outputs byte-identical (manifest, all files)':<44} "
              f"{str(r['manifest_identical']) + ' / ' + str(r['identical']):>28} {'True':>10}")
        if not r["killed"]:
            print("  note: the build finished before the kill point")
    else:
        print(f"{'kill + --resume':<44} {'skipped: no --resume':>28}")
    x = res["extrapolation"]
    if x is None:
        print(f"{'5.5M images on 64 cores':<44} {'skipped: no --timings':>28}")
        return
    print(f"\nextrapolated wall time, {TARGET_IMAGES / 1e6:.1f}M images on {TARGET_CORES} cores "
          f"(from the {res['memory']['units'][-1]}-unit run):")
    for s, v in x["stages"].items():
        print(f"  {s:<9} measured {v['measured_s']:8.1f} s  serial fraction {v['serial_fraction']:.2f}  ->  "
              f"{v['extrapolated_s'] / 3600:7.2f} h")
    print(f"  {'total':<9} {x['total_s'] / 3600:55.2f} h")
    print("model: stage time grows linearly with the number of images (time per image of the largest run);\n"
          "  cores by Amdahl's law per stage, t(c) = t1 * (f + (1 - f) / c), with the serial fraction f measured\n"
          "  from the 1- and 2-worker runs (f = 2 t2 / t1 - 1, clipped to [0, 1]); one machine's disk and no\n"
          "  network or object-store costs are assumed, and curate's sort and near-duplicate search (n log n,\n"
          "  sub-quadratic) are taken as linear, so the total is a lower bound.")


if __name__ == "__main__":
    sys.exit(main())
