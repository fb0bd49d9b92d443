"""The first shipped RWM checkpoint (the default until the second model; the published baselines and reward-hacking
results were produced with it): ``model.safetensors`` + ``config.json`` (see reward_models/README.md, "v1")."""
