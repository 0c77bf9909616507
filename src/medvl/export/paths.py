"""How the LLaVA and messages exports spell image paths (recipe ``export_options: {llava|messages: {...}}``).

By default image paths are relative to the output folder (``images/3f/3fa2....png``), which is what LLaVA's
``--image_folder`` and LLaMA-Factory's ``dataset_dir`` expect, and the files stay byte-identical wherever the
build lives. Tools that resolve image paths against the working directory (ms-swift; or its
``ROOT_IMAGE_DIR``) can be given:

- ``image_paths: absolute``: every path is the image's absolute path (the output folder resolved, symlinks
  followed); the files then work from any folder, but only while the build stays where it was written;
- ``image_root: <folder>``: every path is relative to that folder (``../`` when the build lies outside it);
  a relative ``image_root`` starts from the recipe's ``root`` (the recipe file's folder), like the recipe's
  other paths, or from the working directory when there is no recipe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import ValidationError

from medvl.core.config import StrictModel
from medvl.export.base import check_options

PathFn = Callable[[str], str]


class ImagePathOptions(StrictModel):
    """The image-path options of an export that writes image paths."""

    image_paths: Literal["relative", "absolute"] = "relative"
    image_root: str | None = None  # with "relative": the folder paths are relative to (default: the output folder)


IMAGE_PATH_DEFAULTS: dict[str, Any] = ImagePathOptions().model_dump()


def parse_image_path_options(export: str, opts: dict[str, Any]) -> ImagePathOptions:
    """The image-path options out of an export's checked option dict; a bad value is an error naming the export,
    the key and what is allowed."""
    given = {k: opts[k] for k in IMAGE_PATH_DEFAULTS if k in opts}
    try:
        parsed = ImagePathOptions(**given)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise ValueError(f"export {export!r}: option {key}={given.get(key)!r}: {err['msg']}") from None
    if parsed.image_paths == "absolute" and parsed.image_root is not None:
        raise ValueError(f"export {export!r}: options image_paths=absolute and image_root={parsed.image_root!r} "
                         "contradict each other; give one of them")
    if parsed.image_root is not None and not parsed.image_root.strip():
        raise ValueError(f"export {export!r}: option image_root is empty; give a folder or leave it out")
    return parsed


def check_export_options(export: str, options: dict[str, Any] | None, defaults: dict[str, Any]
                         ) -> tuple[dict[str, Any], ImagePathOptions]:
    """:func:`~medvl.export.base.check_options` over ``defaults`` plus the image-path options, and the parsed
    image-path options."""
    opts = check_options(export, options, {**defaults, **IMAGE_PATH_DEFAULTS})
    return opts, parse_image_path_options(export, opts)


def image_path_fn(out_dir: Path, paths: ImagePathOptions, recipe: Any = None) -> tuple[PathFn | None, dict[str, Any]]:
    """A function turning an output-relative image path into the path to write (None: write it unchanged), and
    the manifest ``extra`` that says how paths were written (empty for the default, so default outputs do not
    change)."""
    if paths.image_paths == "absolute":
        base = Path(out_dir).resolve()
        return (lambda rel: (base / rel).as_posix()), {"image_paths": "absolute"}
    if paths.image_root is None:
        return None, {}
    root = Path(paths.image_root).expanduser()
    if not root.is_absolute():
        start = getattr(recipe, "_root", None)
        root = (Path(start) if start is not None else Path.cwd()) / root
    root = root.resolve()
    base = Path(out_dir).resolve()
    prefix = Path(os.path.relpath(base, root)).as_posix()
    if prefix == ".":
        return None, {"image_root": root.as_posix(), "image_prefix": ""}
    return (lambda rel: f"{prefix}/{rel}"), {"image_root": root.as_posix(), "image_prefix": prefix + "/"}


def map_images(images: list[str], fn: PathFn | None) -> list[str]:
    """``images`` as they are written (unchanged without a path function)."""
    return list(images) if fn is None else [fn(p) for p in images]
