from . import box_head, cascade, mask_head, pointrend, standard  # noqa: F401  (registers builders)
