"""The ``smooth`` RWM checkpoint: trained like the default but with its 24 policy samples per scene drawn by
bc_default's smooth exploration, so it ranks plans near the policy's own best; the reward of the greedy picks that
IRL-VLA distils before PPO (``model.safetensors`` + ``config.json``; commands in reward_models/README.md)."""
