"""``medvl chat MODEL --image x.png "question"``: ask a model about an image (greedy answer on stdout)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="chat")
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("question")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image file (PNG, JPEG, ...; DICOM is rendered with its window). Repeatable; none = text only.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True, help="float32, bfloat16 or float16.")
def command(model: Path, question: str, images: tuple[Path, ...], max_new_tokens: int, device: str,
            dtype: str) -> None:
    """Answer one question about zero or more images with a model folder (from `medvl train`, `medvl model
    init`, or any transformers LLaVA folder), using the chat template and image preprocessing saved with it
    (the same code path as `medvl eval --model medvl:PATH`).

    Example: medvl chat runs/medvl/stage3/final --image chest.png "Which modality is this image?\""""
    from medvl.eval.adapters._base import AdapterError
    from medvl.eval.adapters.medvl_model import MedvlModelAdapter
    from medvl.eval.types import Request

    try:
        refs = [_image_bytes(p) for p in images]
        adapter = MedvlModelAdapter(str(model), batch_size=1, device=device, dtype=dtype)
        answer = adapter.generate([Request(id="chat", prompt=question, images=refs, max_new_tokens=max_new_tokens)])[0]
    except (AdapterError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if not answer:
        click.echo("(the model gave an empty answer)", err=True)
    click.echo(answer)


def _image_bytes(path: Path) -> bytes:
    """PNG bytes of an image file; DICOM files are rendered through medvl's DICOM reader (windowed, 8-bit)."""
    import io

    from PIL import Image

    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] != b"DICM" and path.suffix.lower() not in (".dcm", ".dicom"):
        return path.read_bytes()
    from medvl.imaging.window import render
    from medvl.io.dicom import DicomReadError, read_dicom

    try:
        image = read_dicom(path)
    except DicomReadError as e:
        raise ValueError(str(e)) from None
    frame = image.frames[len(image.frames) // 2]  # the middle frame of a multi-frame file
    arr = frame if image.rgb else render(frame, image.modality, photometric=image.photometric, voi=image.voi)[0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
