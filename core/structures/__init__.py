from .instances import Instances
from .masks import CroppedMasks

__all__ = ["Instances", "CroppedMasks"]
