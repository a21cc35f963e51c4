from . import fpn, resnet  # noqa: F401  (registers builders)
