"""The ``medvl`` command. Each command group lives in its own module under ``medvl.cli`` and exposes a
click command named ``command``; modules are imported only when their command runs, so ``medvl --help``
stays fast and heavy dependencies load only where used."""

from __future__ import annotations

import gc
import importlib
import sys

import click

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("medvl.cli.build", "Build multimodal instruction data from a YAML recipe."),
    "demo": ("medvl.cli.demo", "Lay out a small real corpus from pip-shipped medical images and build it."),
    "eval": ("medvl.cli.eval", "Evaluate a model (or re-score predictions) on a medical benchmark."),
    "audit": ("medvl.cli.audit", "Find overlaps between a built training set and benchmark data."),
    "bench-build": ("medvl.cli.bench_build", "Make a GMAI-MMBench-style multiple-choice benchmark from records."),
    "model": ("medvl.cli.model", "Assemble a LLaVA model from a vision tower and a language model (`model init`)."),
    "train": ("medvl.cli.train", "Train a LLaVA model in the three GMAI-VL stages from a YAML config."),
    "chat": ("medvl.cli.chat", "Ask a trained model a question about an image."),
    "review": ("medvl.cli.review", "Review a finished build: a judge model scores each source (--judge), or "
               "browse and grade by hand in a local page (--serve)."),
    "taxonomy": ("medvl.cli.taxonomy", "List allowed modalities, departments, tasks, body regions, views; "
                 "--formats: source options."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _ = COMMANDS[name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("medvl.cli"):
                return _unavailable(name, f"command module {module} is not part of this install")
            raise
        return mod.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, COMMANDS[n][1]) for n in sorted(COMMANDS)])


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name=name, help=why)
    def _cmd() -> None:
        raise click.ClickException(why)

    return _cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medvl")
def cli() -> None:
    """medvl: build, train and evaluate general medical vision-language models."""


def main() -> None:
    try:
        cli(prog_name="medvl")
    finally:
        # what is left is freed with the process: freezing it keeps the interpreter's exit from walking every
        # object (120 -> 20 ms once a build's modules are loaded)
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
