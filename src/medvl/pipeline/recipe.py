"""The YAML recipe: sources, generation, curation and exports, validated up front.

The recipe composes the stages' own configs (``medvl.sources.config``, ``medvl.curate.config``,
``medvl.generate.config``); they are re-exported here for callers that import them from the recipe.

Errors name the key and the allowed values, e.g.
``sources[2].format: 'nifti_folder' is not a source format; allowed: coco, csv_boxes, ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from medvl.core.config import KIND_NAMES, StrictModel
from medvl.curate.config import CurationConfig
from medvl.generate.config import GenerationConfig
from medvl.sources.config import ImageConfig, SlicingPolicy, SourceConfig, WindowSpec

__all__ = ["EXPORT_NAMES", "KIND_NAMES", "CurationConfig", "GenerationConfig", "ImageConfig", "Recipe",
           "RecipeError", "SlicingPolicy", "SourceConfig", "WindowSpec", "load_recipe", "parse_recipe"]

EXPORT_NAMES = ("llava", "messages", "parquet", "mixture", "webdataset", "card")
# written when a recipe names no exports: WebDataset tars copy every image again, so they are asked for by name
DEFAULT_EXPORTS = ("llava", "messages", "parquet", "mixture", "card")


class RecipeError(ValueError):
    """A recipe problem, with the file and key in the message."""


class Recipe(StrictModel):
    name: str = "medvl-corpus"
    seed: int = 0
    root: str | None = Field(None, description="folder that relative source paths start from, and that paths "
                             "written to outputs are relative to (default: the recipe file's folder)")
    salt: str | None = Field(None, description="secret for the salted patient keys; required by `medvl build` "
                             "(without it keys of guessable ids could be reversed)")
    workers: int = Field(1, ge=1)
    sources: list[SourceConfig]
    generation: GenerationConfig = GenerationConfig()
    curation: CurationConfig = CurationConfig()
    image: ImageConfig = ImageConfig()
    exports: list[str] = list(DEFAULT_EXPORTS)
    export_options: dict[str, dict[str, Any]] = {}  # per export, e.g. {parquet: {rows_per_shard: 5000},
    #                                                 mixture: {ratios: {kvasir: 0.5}}}
    _root: Path | None = PrivateAttr(default=None)  # resolved `root` (or the recipe's folder)
    _given: dict[str, str] = PrivateAttr(default_factory=dict)  # absolute path -> the spelling the recipe used

    def portable_path(self, path: str | None) -> str | None:
        """How a local path is written to outputs: relative to the root when inside it; else as the recipe
        spelled it when that was relative; else only its last component (an absolute path names folders of
        this machine, which may name people)."""
        if path is None:
            return None
        p = Path(path)
        if self._root is not None and p.is_absolute():
            try:
                return p.resolve().relative_to(self._root).as_posix() or "."
            except ValueError:
                pass
        given = self._given.get(str(p), str(path))
        if not Path(given).is_absolute():
            return Path(given).as_posix()
        return f"<outside the recipe root>/{p.name}"

    @field_validator("exports")
    @classmethod
    def _known_exports(cls, v: list[str]) -> list[str]:
        for e in v:
            if e not in EXPORT_NAMES:
                raise ValueError(f"{e!r} is not an export; allowed: {', '.join(EXPORT_NAMES)}")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> "Recipe":
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice")
            seen.add(s.name)
        return self


def _format_errors(e: ValidationError) -> str:
    lines = []
    for er in e.errors():
        loc = ""
        for part in er["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (("." if loc else "") + str(part))
        msg = er["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc or '(top)'}: {msg}")
    return "\n".join(lines)


def parse_recipe(data: dict[str, Any], origin: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    """Validate a recipe dict; relative source paths are resolved against ``base_dir``."""
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"{origin}: invalid recipe\n{_format_errors(e)}") from None
    root = None
    if recipe.root is not None:
        root = Path(recipe.root)
        if not root.is_absolute():
            root = (base_dir or Path.cwd()) / root
    elif base_dir is not None:
        root = base_dir
    if root is not None:
        recipe._root = root.resolve()
        for s in recipe.sources:
            p = Path(s.path)
            if not p.is_absolute():
                s.path = str((recipe._root / p).resolve())
                recipe._given[s.path] = p.as_posix()
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    return parse_recipe(data, origin=str(path), base_dir=path.parent.resolve())
