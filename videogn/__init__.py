"""videogn: video recognition training where normalization and memory matter."""

from videogn.models import create_model

__version__ = "0.1.0"
__all__ = ["create_model", "__version__"]
