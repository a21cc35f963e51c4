"""File dialogs that never open the files they list.

Qt's file dialog (like GTK's) guesses each listed file's type and icon by reading its first
bytes. For an open project that read is harmful: opening and closing any descriptor of an SQLite
database drops every POSIX lock this process holds on it, so another program could believe the
project unused and delete its journal (see :mod:`cellseg.core.project.lock`, which guards
against the consequences). These dialogs name types and icons by the file name alone.

Use them instead of ``QFileDialog``'s static functions; they take the same arguments.
"""
from __future__ import annotations

from PySide6.QtCore import QFileInfo
from PySide6.QtWidgets import QFileDialog, QFileIconProvider, QWidget


class NameOnlyIconProvider(QFileIconProvider):
    """Icons and type names from the file name and kind, never from the file's contents."""

    def icon(self, what):
        if isinstance(what, QFileInfo):
            kind = (QFileIconProvider.IconType.Folder if what.isDir()
                    else QFileIconProvider.IconType.File)
            return super().icon(kind)
        return super().icon(what)

    def type(self, info: QFileInfo) -> str:
        if info.isDir():
            return "Folder"
        return f"{info.suffix()} file" if info.suffix() else "File"


class NameOnlyFileDialog(QFileDialog):
    """Qt's own (non-native) file dialog with :class:`NameOnlyIconProvider`: the platform's
    dialog would sniff contents again, out of our control."""

    def __init__(self, parent: QWidget | None, caption: str, directory: str, name_filter: str,
                 mode: QFileDialog.FileMode, accept: QFileDialog.AcceptMode) -> None:
        super().__init__(parent, caption, directory, name_filter)
        self.setOption(QFileDialog.Option.DontUseNativeDialog)
        self.icon_provider = NameOnlyIconProvider()  # the dialog does not own its provider
        self.setIconProvider(self.icon_provider)
        self.setFileMode(mode)
        self.setAcceptMode(accept)
        if mode == QFileDialog.FileMode.Directory:
            self.setOption(QFileDialog.Option.ShowDirsOnly)


def _run(dialog: QFileDialog) -> tuple[str, str]:
    if dialog.exec() != QFileDialog.DialogCode.Accepted or not dialog.selectedFiles():
        return "", ""
    return dialog.selectedFiles()[0], dialog.selectedNameFilter()


def get_open_file_name(parent: QWidget | None = None, caption: str = "", directory: str = "",
                       name_filter: str = "") -> tuple[str, str]:
    """``(path, chosen filter)`` of an existing file, or ``("", "")`` if cancelled."""
    return _run(NameOnlyFileDialog(parent, caption, directory, name_filter,
                        QFileDialog.FileMode.ExistingFile, QFileDialog.AcceptMode.AcceptOpen))


def get_save_file_name(parent: QWidget | None = None, caption: str = "", directory: str = "",
                       name_filter: str = "") -> tuple[str, str]:
    """``(path, chosen filter)`` to write to (the dialog asks before overwriting), or
    ``("", "")`` if cancelled."""
    return _run(NameOnlyFileDialog(parent, caption, directory, name_filter,
                        QFileDialog.FileMode.AnyFile, QFileDialog.AcceptMode.AcceptSave))


def get_existing_directory(parent: QWidget | None = None, caption: str = "",
                           directory: str = "") -> str:
    """A folder's path, or ``""`` if cancelled."""
    return _run(NameOnlyFileDialog(parent, caption, directory, "", QFileDialog.FileMode.Directory,
                        QFileDialog.AcceptMode.AcceptOpen))[0]
