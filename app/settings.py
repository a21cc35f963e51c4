"""What the app remembers between sessions (QSettings): geometry, recent folders, model paths,
device. Tests pass an INI file so they never touch the user's settings."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from cellseg.core.tiling.grid import TileSettings

ORGANISATION, APPLICATION = "cellseg", "cellseg-gui"
MAX_RECENT = 10
MODEL_KEYS = ("cascade", "pointrend")


class AppSettings:
    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings(ORGANISATION, APPLICATION)

    @staticmethod
    def from_file(path: str | Path) -> "AppSettings":
        return AppSettings(QSettings(str(path), QSettings.Format.IniFormat))

    def sync(self) -> None:
        self.q.sync()

    # ------------------------------------------------------------------ window
    def geometry(self) -> QByteArray | None:
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_geometry(self, geometry: QByteArray, state: QByteArray | None = None) -> None:
        self.q.setValue("window/geometry", geometry)
        if state is not None:
            self.q.setValue("window/state", state)

    def window_state(self) -> QByteArray | None:
        value = self.q.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    # ------------------------------------------------------------------ recent folders
    def recent(self) -> list[str]:
        value = self.q.value("recent/paths", [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-item list
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str | Path) -> list[str]:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.recent() if p != path]
        items = items[:MAX_RECENT]
        self.q.setValue("recent/paths", items)
        return items

    def recent_projects(self) -> list[str]:
        value = self.q.value("recent/projects", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent_project(self, path: str | Path) -> list[str]:
        path = str(Path(path).resolve())
        items = ([path] + [p for p in self.recent_projects() if p != path])[:MAX_RECENT]
        self.q.setValue("recent/projects", items)
        return items

    # ------------------------------------------------------------------ models and device
    def model_paths(self, key: str) -> tuple[str, str]:
        """(config, weights) remembered for model ``key`` ("" when unset)."""
        return (str(self.q.value(f"models/{key}/config", "") or ""),
                str(self.q.value(f"models/{key}/weights", "") or ""))

    def set_model_paths(self, key: str, config: str | Path, weights: str | Path) -> None:
        self.q.setValue(f"models/{key}/config", str(config))
        self.q.setValue(f"models/{key}/weights", str(weights))

    def device(self) -> str:
        return str(self.q.value("models/device", "auto") or "auto")

    def set_device(self, device: str) -> None:
        self.q.setValue("models/device", device)

    def precision(self) -> str:
        """Inference precision, "exact" (default) or "fast"."""
        value = str(self.q.value("models/precision", "exact") or "exact")
        return value if value in ("exact", "fast") else "exact"

    def set_precision(self, precision: str) -> None:
        self.q.setValue("models/precision", precision)

    def tiling(self) -> TileSettings | None:
        """Tiled prediction of large images (None: off, the default)."""
        try:
            tile = int(self.q.value("models/tile", 0) or 0)
            overlap = int(self.q.value("models/tile_overlap", 0) or 0)
            return TileSettings(tile, overlap, 1.0) if tile else None
        except (TypeError, ValueError):
            return None  # a hand-edited settings file

    def set_tiling(self, tiling: TileSettings | None) -> None:
        self.q.setValue("models/tile", tiling.tile if tiling else 0)
        self.q.setValue("models/tile_overlap", tiling.overlap if tiling else 0)
