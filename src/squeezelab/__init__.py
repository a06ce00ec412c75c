"""squeezelab: build, train, explore, compress and deploy SqueezeNet-family networks."""

from .interop.loading import load_model
from .models import ModelConfig, create_model, get_model_config, list_models, list_pretrained, register_model

__version__ = "0.1.0"

__all__ = ["ModelConfig", "__version__", "create_model", "get_model_config", "list_models", "list_pretrained", "load_model", "register_model"]
