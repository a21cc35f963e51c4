from .image import IMAGE_SUFFIXES, looks_like_label_image, read_image, to_model_input, to_uint8

__all__ = ["IMAGE_SUFFIXES", "looks_like_label_image", "read_image", "to_uint8",
           "to_model_input"]
