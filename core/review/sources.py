"""What "open" means: a folder of images, one image file, a COCO dataset (.json), or a
research-style folder (one sub-folder per sample holding ``image.tif`` + ``classN.tif``).
No Qt here: the review session and the window list :attr:`ImageSource.entries`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageReadError
from ..io import IMAGE_SUFFIXES, looks_like_label_image

# Files that hold annotations next to their images ("mask2d.tif", "cell_labels.png", ...):
# listing them as images to predict on would only confuse.
_RESEARCH_IMAGE = "image"


@dataclass
class ImageEntry:
    name: str  # shown in the list
    path: Path
    image_id: int | None = None  # COCO image id where the source is a COCO dataset


@dataclass
class ImageSource:
    kind: str  # "folder", "file", "coco" or "research"
    root: Path
    entries: list[ImageEntry]
    class_names: list[str] = field(default_factory=list)  # from COCO categories, if any
    dataset: object = None  # the core.coco dataset object for kind == "coco"


def natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def open_source(path: str | Path) -> ImageSource:
    """Inspect ``path`` and list its images. Raises ImageReadError/DataError naming the path."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"no such file or folder: {path}")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _open_coco(path)
        if not is_image_file(path):
            raise ImageReadError(f"not an image or COCO .json file: {path} "
                                 f"(images: {', '.join(IMAGE_SUFFIXES)})")
        return ImageSource("file", path.parent, [ImageEntry(path.name, path)])
    research = _research_samples(path)
    if research:
        return ImageSource("research", path, research)
    files = sorted((p for p in path.iterdir() if is_image_file(p) and not looks_like_label_image(p)),
                   key=lambda p: natural_key(p.name))
    if not files:
        jsons = sorted(path.glob("*.json"))
        if len(jsons) == 1:
            return _open_coco(jsons[0])
        raise ImageReadError(f"no images found in {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return ImageSource("folder", path, [ImageEntry(p.name, p) for p in files])


def _research_samples(folder: Path) -> list[ImageEntry]:
    if not any((d / f"{_RESEARCH_IMAGE}{sfx}").is_file()
               for d in folder.iterdir() if d.is_dir() for sfx in (".tif", ".tiff")):
        return []
    from ..coco.research_folder import find_seed_samples

    return [ImageEntry(s.name, s.image) for s in find_seed_samples(folder)]


def _open_coco(path: Path) -> ImageSource:
    from ..coco.dataset import load_coco

    dataset = load_coco(path)
    root = path.parent
    entries = []
    for img in dataset.images:
        file = Path(img.file_name)
        candidates = [file] if file.is_absolute() else [root / file, root / "images" / file]
        found = next((c for c in candidates if c.is_file()), candidates[0])
        entries.append(ImageEntry(file.name, found, int(img.id)))
    return ImageSource("coco", root, entries, dataset.class_names, dataset)
