"""The classes an annotation may have: one rule for the app's class keys, drawing and export.

A project's categories (or, without a project, the model's class names) are the only classes an
instance may be given; a class index outside them would make the project unexportable
(``project_dataset`` refuses it), so edits are checked here first.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import DataError


def check_class_index(names: Sequence[str], class_index: int, where: str = "this project"
                      ) -> int:
    """Return ``class_index`` if ``names`` defines it, else raise a one-line :class:`DataError`.

    Args:
        names: class names, index = 0-based class index (a project's categories in order).
        class_index: the 0-based class an edit wants to give.
        where: what ``names`` belong to, for the message ("this project", "the model").

    Returns:
        ``class_index`` unchanged.
    """
    k = int(class_index)
    if 0 <= k < len(names):
        return k
    listed = ", ".join(f"{i + 1} {n}" for i, n in enumerate(names[:9]))
    plural = "class" if len(names) == 1 else "classes"
    raise DataError(f"class {k + 1} does not exist: {where} has {len(names)} {plural} "
                    f"({listed})")
