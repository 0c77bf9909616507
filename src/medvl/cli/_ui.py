"""Shared console helpers: a rich progress bar and the end-of-build summary table."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as prog:
        task = prog.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


def build_summary_table(summary: dict[str, Any]) -> Table:
    t = Table(title=f"medvl build: {summary['recipe']}", show_lines=False)
    for col in ("source", "units", "kept", "rejected", "records", "dropped inside kept units"):
        t.add_column(col, justify="right" if col != "source" else "left")
    for name, s in summary["sources"].items():
        t.add_row(name, str(s["units"]), str(s["kept_units"]), str(s["rejected_units"]), str(s["records"]),
                  str(s["partial_rejects"]))
    u = summary["units"]
    t.add_row("[bold]total", str(u["input"]), str(u["kept"]), str(u["rejected"]), str(summary["records"]), "",
              end_section=True)
    return t
