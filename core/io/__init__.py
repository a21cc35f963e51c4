from .image import IMAGE_SUFFIXES, read_image, to_uint8, to_model_input

__all__ = ["IMAGE_SUFFIXES", "read_image", "to_uint8", "to_model_input"]
