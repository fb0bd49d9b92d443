"""The diffusion-head VLA warm start of dppo-vla-rwm (package data: config.json + model.safetensors)."""
