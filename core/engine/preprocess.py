"""Resizing and batching exactly as Detectron2's test-time path does it."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


def shortest_edge_size(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """Output (H, W) of ResizeShortestEdge: short side to ``short_edge``, long side capped."""
    scale = short_edge * 1.0 / min(h, w)
    newh, neww = (short_edge * 1.0, scale * w) if h < w else (scale * h, short_edge * 1.0)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_image(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Resize (H, W, C) like upstream: Pillow bilinear for uint8, torch bilinear otherwise.

    The two give different pixels; upstream's references were made from uint8 images, so the
    uint8 path (the one the conversion rule always produces) is what parity depends on.
    """
    h, w = image.shape[:2]
    if (h, w) == (new_h, new_w):
        return image
    if image.dtype == np.uint8:
        if image.ndim == 3 and image.shape[2] == 1:
            pil = Image.fromarray(image[:, :, 0], mode="L")
        else:
            pil = Image.fromarray(image)
        out = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
        return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out
    t = torch.from_numpy(np.ascontiguousarray(image))
    shape = t.shape
    t = t.view(shape[0], shape[1], -1).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, (new_h, new_w), mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).view(new_h, new_w, *shape[2:]).numpy().astype(image.dtype)


def resize_shortest_edge(image: np.ndarray, short_edge: int, max_size: int) -> np.ndarray:
    if short_edge == 0:  # MIN_SIZE_TEST 0 disables resizing
        return image
    h, w = image.shape[:2]
    return resize_image(image, *shortest_edge_size(h, w, short_edge, max_size))


def batch_images(images: list[torch.Tensor], size_divisibility: int = 0,
                 pad_value: float = 0.0) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Pad (C, H, W) tensors to a common size rounded up to ``size_divisibility``."""
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    max_h = max(s[0] for s in sizes)
    max_w = max(s[1] for s in sizes)
    if size_divisibility > 1:
        d = size_divisibility
        max_h = (max_h + d - 1) // d * d
        max_w = (max_w + d - 1) // d * d
    batch = images[0].new_full((len(images), images[0].shape[0], max_h, max_w), pad_value)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    return batch, sizes
