"""squeezelab: build, train, explore, compress and deploy SqueezeNet-family networks."""

from .models import ModelConfig, create_model, get_model_config, list_models, register_model

__version__ = "0.1.0"

__all__ = ["ModelConfig", "__version__", "create_model", "get_model_config", "list_models", "register_model"]
