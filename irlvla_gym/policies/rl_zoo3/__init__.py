"""rl-zoo3 hyperparameter files (one per algorithm) for the IRL-VLA envs; a package so that wheels ship them."""
