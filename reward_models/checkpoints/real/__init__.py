"""The real-data RWM checkpoint: the default fine-tuned on synthetic scenes and real windows (AV2, nuScenes, Waymo
samples) with 64 agent slots and oriented-box agent distances: ``model.safetensors`` + ``config.json`` (see
reward_models/README.md, "Real data")."""
