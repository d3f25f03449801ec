from videogn.models.factory import MODELS, create_model
from videogn.models.i3d import ResNet3D
from videogn.models.norm import NORM_BUILDERS, get_norm_layer

__all__ = ["MODELS", "NORM_BUILDERS", "ResNet3D", "create_model", "get_norm_layer"]
