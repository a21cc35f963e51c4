"""The window's questions and notes: File > Open…, Model > Set model…, Save screenshot, File >
Open recent, Help > Keyboard shortcuts and About. Each takes the window it asks for."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from . import file_dialogs


def ask_folder(window) -> None:
    path = file_dialogs.get_existing_directory(window, "Open folder of images")
    if path:
        window.open_path(path)


def ask_file(window) -> None:
    path, _ = file_dialogs.get_open_file_name(window, "Open image", "",
                                              "Images (*.tif *.tiff *.png *.jpg *.jpeg *.bmp)")
    if path:
        window.open_path(path)


def ask_coco(window) -> None:
    path, _ = file_dialogs.get_open_file_name(window, "Open COCO dataset", "", "COCO (*.json)")
    if path:
        window.open_path(path)


def ask_model(window, key: str) -> None:
    config, _ = file_dialogs.get_open_file_name(window, f"{key}: Detectron2 config", "",
                                                "Config (*.yaml *.yml)")
    if not config:
        return
    weights, _ = file_dialogs.get_open_file_name(window, f"{key}: checkpoint",
                                                 str(Path(config).parent),
                                                 "Checkpoint (*.pth *.pkl)")
    if weights:
        window.set_model(key, config, weights)


def ask_screenshot(window) -> None:
    path, _ = file_dialogs.get_save_file_name(window, "Save screenshot", "cellseg.png",
                                              "PNG (*.png)")
    if path:
        window.grab().save(path)


def fill_recent(menu, window) -> None:
    """File > Open recent: the settings' recent paths."""
    menu.clear()
    recent = window.settings.recent()
    for path in recent:
        menu.addAction(path, lambda p=path: window.open_path(p))
    menu.setEnabled(bool(recent))


def show_shortcuts(window):
    """Help > Keyboard shortcuts (F1): every key of the window's actions."""
    from .help import ShortcutsDialog

    dialog = ShortcutsDialog(window.registry.shortcut_rows(), window)
    dialog.show()
    return dialog


def show_about(window) -> None:
    from .help import app_version

    QMessageBox.about(window, "About cellseg-gui",
                      f"cellseg-gui {app_version()}: review and correct instance segmentations "
                      "of microscopy images with Detectron2-compatible Cascade Mask R-CNN and "
                      "PointRend models.\n\nHelp > Keyboard shortcuts (F1) lists every key.")
