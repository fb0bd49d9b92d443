"""The default RWM checkpoint (v2: lane-following agent forecast, compiled plan inputs, 4,200 synthetic-train scenes
with stage-1 policy samples): ``model.safetensors`` + ``config.json`` (see reward_models/README.md)."""
