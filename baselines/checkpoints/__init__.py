"""Shipped checkpoints of the baselines (bc_diffusion: the DPPO warm start, see baselines/pretrain.py)."""
