from .header import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageHeader, max_pixels, read_header
from .image import IMAGE_SUFFIXES, looks_like_label_image, read_image, to_model_input, to_uint8

__all__ = ["IMAGE_SUFFIXES", "looks_like_label_image", "read_image", "to_uint8",
           "to_model_input", "read_header", "ImageHeader", "max_pixels", "DEFAULT_MAX_PIXELS",
           "MAX_PIXELS_ENV"]
