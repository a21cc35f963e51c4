"""The review session: the Qt-free model of reviewing an image list (see :mod:`.session`)."""
from .session import ReviewSession
from .settings import MODELS_OF_CHOICE, ReviewSettings
from .sources import ImageEntry, ImageSource, open_source
from .state import History, ImageInfo, ImageState, RawKey

__all__ = ["ReviewSession", "ReviewSettings", "MODELS_OF_CHOICE", "ImageEntry", "ImageSource",
           "open_source", "History", "ImageInfo", "ImageState", "RawKey"]
