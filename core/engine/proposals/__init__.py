from . import anchors, rpn  # noqa: F401  (registers builders)
