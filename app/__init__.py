"""cellseg.app.

Importing it makes ``None`` safe from a binding bug first: PySide6 6.12 returns ``None`` from
every void method (``setText``, ``update``, ``QPainter.drawImage``, ...) without the reference
it owes on CPython 3.11, which does not make ``None`` immortal (3.12 does). Each call takes one
reference off ``None``; a canvas repaint makes a dozen such calls, so a window without torch
imported (a few 10,000 references) aborted with "deallocating None" after about 1,600 repaints
(a minute of brushing). :func:`keep_none_alive` detects the bug and gives ``None`` so many
references that no session can use them up; with a correct binding it does nothing.
"""
from __future__ import annotations

import sys

_SPARE_NONE_REFS = 1 << 48  # ~3e14: a billion void calls a second would need days


def keep_none_alive() -> bool:
    """Add references to ``None`` if calling a void Qt method takes one away; True if it did."""
    if sys.version_info >= (3, 12):
        return False  # None is immortal: its reference count is never changed
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("")
    if before - sys.getrefcount(None) < 32:
        return False  # a binding that counts references correctly
    import ctypes

    # ob_refcnt is the first field of every CPython object
    ctypes.c_ssize_t.from_address(id(None)).value += _SPARE_NONE_REFS
    return True


keep_none_alive()
