"""The default RWM checkpoint: ``model.safetensors`` + ``config.json`` (see reward_models/README.md)."""
