"""Model slots, raw model outputs and decoded images of a review: what a prediction needs.

Raw outputs are cached under :class:`RawKey` (image, model slot, checkpoint, device, precision,
TTA), so a post-processing change re-composes in milliseconds and never re-runs a model.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..postprocess.pipeline import Settings, compose
from ..structures import Instances
from .state import RawKey

Predictor = Callable[..., Instances]  # predictor(image, tta=bool) -> Instances


@dataclass(frozen=True)
class ModelSlot:
    """A predictor and what names its outputs in the raw-output keys."""

    predictor: Predictor | None
    config: str = ""
    weights: str = ""
    device: str = ""
    precision: str = "exact"


class ModelOutputs:
    """The model slots, the raw-output cache (least recently used dropped first) and the last
    few decoded images."""

    def __init__(self, raw_cache: int = 256, image_cache: int = 4) -> None:
        self.slots: dict[str, ModelSlot] = {}
        self._raw: OrderedDict[RawKey, Instances] = OrderedDict()
        self._raw_cache = raw_cache
        self._pixels: OrderedDict[str, np.ndarray] = OrderedDict()
        self._image_cache = image_cache

    def keys(self, image: str | Path, models: Iterable[str], tta: bool) -> list[RawKey]:
        """The raw outputs an image needs from ``models`` (slots not set get empty names)."""
        out = []
        for m in models:
            slot = self.slots.get(m) or ModelSlot(None)
            out.append(RawKey(str(image), m, slot.config, slot.weights, slot.device, bool(tta),
                              slot.precision))
        return out

    def get(self, key: RawKey) -> Instances | None:
        return self._raw.get(key)

    def missing(self, keys: Iterable[RawKey]) -> list[RawKey]:
        return [k for k in keys if k not in self._raw]

    def keep(self, key: RawKey, instances: Instances) -> None:
        self._raw[key] = instances
        self._raw.move_to_end(key)
        while len(self._raw) > self._raw_cache:
            self._raw.popitem(last=False)

    def unset(self, keys: Iterable[RawKey]) -> list[str]:
        """Model slots among ``keys`` that have no predictor."""
        return [k.model for k in keys
                if self.slots.get(k.model) is None or self.slots[k.model].predictor is None]

    def run(self, keys: Iterable[RawKey], image: np.ndarray) -> None:
        """Run each key's predictor on ``image`` and cache the outputs (all or none)."""
        outputs = [(k, self.slots[k.model].predictor(image, tta=k.tta)) for k in keys]
        for key, instances in outputs:
            self.keep(key, instances)

    def compose(self, keys: list[RawKey], settings: Settings) -> Instances | None:
        """The post-processed result of cached outputs; None while one is missing. Raises
        ValueError when the outputs cannot be composed (see :func:`compose`)."""
        if any(k not in self._raw for k in keys):
            return None
        return compose({k.model: self._raw[k] for k in keys}, settings)

    def image(self, path: str | Path) -> np.ndarray:
        """The decoded image (dtype kept). Raises ImageReadError."""
        from ..io import read_image

        path = str(path)
        pixels = self._pixels.pop(path, None)
        if pixels is None:
            pixels = read_image(path)
        self._pixels[path] = pixels
        while len(self._pixels) > self._image_cache:
            self._pixels.popitem(last=False)
        return pixels
