"""Side panels: thin widgets that emit what the user chose; the window applies it to core/canvas."""
from .display import DisplayPanel
from .images import ImageListPanel
from .legend import LegendPanel
from .models import ModelsPanel
from .postprocess import PostprocessPanel

__all__ = ["DisplayPanel", "ImageListPanel", "LegendPanel", "ModelsPanel", "PostprocessPanel"]
