"""Image sources moved to :mod:`cellseg.core.review.sources` (no Qt in them); the window still
imports them from here."""
from cellseg.core.review.sources import (ImageEntry, ImageSource, is_image_file, natural_key,
                                         open_source)

__all__ = ["ImageEntry", "ImageSource", "is_image_file", "natural_key", "open_source"]
