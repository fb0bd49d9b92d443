"""The policy-aware RWM checkpoint (trained with samples of the shipped BC policy): ``model.safetensors`` +
``config.json`` (see reward_models/README.md, "policy-aware checkpoint")."""
