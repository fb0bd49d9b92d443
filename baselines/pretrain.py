"""Warm start of the diffusion head for ``dppo-vla-rwm``: the stage-1 (BC) policy with a diffusion planning head.

The shipped BC checkpoint ``bc_default`` has a Gaussian head. DPPO fine-tunes a *diffusion* policy, so its starting
point is ``bc_default``'s encoder (frozen, copied as is) plus a diffusion head trained by behaviour cloning on the
expert plans of synthetic-train (the head's own ``bc_loss``: x0-denoising loss + MSE of the deterministic sample).
Because the encoder is frozen, its fused tokens are computed once per scene and the head trains on them alone,
which takes a few minutes on one CPU core.

The result ships as ``baselines/checkpoints/bc_diffusion`` (made by the command below) and is evaluated beside
``bc_default`` in the baselines table (row ``bc-diffusion``)::

    python -m baselines.pretrain --out baselines/checkpoints/bc_diffusion --num-scenes 1000 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from baselines.common import length_groups

BC_DIFFUSION = Path(__file__).resolve().parent / "checkpoints" / "bc_diffusion"
"""The shipped diffusion warm start (``bc_default`` encoder + BC-trained diffusion head)."""


def resolve_pretrained(name: str) -> str:
    """A VLA checkpoint spec: ``"bc_diffusion"`` -> the shipped diffusion warm start; anything else unchanged
    (``"bc_default"`` and directories are resolved by :func:`irlvla_gym.policies.network.resolve_checkpoint`)."""
    return str(BC_DIFFUSION) if name == "bc_diffusion" else name


def pretrain_diffusion(out: str | Path, init: str = "bc_default", num_scenes: int = 1000, epochs: int = 30,
                       batch_size: int = 64, lr: float = 1e-3, diffusion_steps: int | None = None, seed: int = 0,
                       cache_dir: str | None = None, progress: bool = True) -> dict[str, float]:
    """Train a diffusion head on the frozen encoder of ``init`` and save the network to ``out``.

    Returns metrics: final training loss, ADE/FDE (m) of the deterministic sample on the training scenes, seconds.
    """
    import torch
    from tqdm.auto import tqdm

    from irlvla_gym.policies import VLAConfig, VLANetwork, prepare_observations
    from irlvla_gym.policies.bc import build_obs_cache, displacement_errors
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads()
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    source = VLANetwork.from_pretrained(init)
    config = VLAConfig.from_dict({**source.config.to_dict(), "head": "diffusion",
                                  **({"diffusion_steps": diffusion_steps} if diffusion_steps else {})})
    net = VLANetwork(config, load_pretrained=False)
    net.encoder.load_state_dict(source.encoder.state_dict(), strict=True)
    net.encoder.requires_grad_(False).eval()

    # ---- fused tokens of every training scene, once (the encoder is frozen) -----------------------------------------
    # Grouped by instruction length, so every scene is encoded exactly as alone (see baselines.common.length_groups).
    cache = build_obs_cache("synthetic-train", None, num_scenes, net.obs_keys, cache_dir, progress)
    n = len(cache)
    targets = torch.from_numpy(np.array(cache.actions, np.float32))
    groups: list[tuple[np.ndarray, torch.Tensor]] = []
    with torch.no_grad():
        for rows in length_groups(np.asarray(cache.obs["instruction"]) if "instruction" in cache.obs else None, n):
            parts = [net.encoder(prepare_observations(cache.batch(rows[s:s + 128]), net.obs_keys))
                     for s in range(0, len(rows), 128)]
            groups.append((rows, torch.cat(parts)))

    # ---- BC of the head (minibatches within one instruction-length group) ------------------------------------------
    head = net.head
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    batches_per_epoch = sum(math.ceil(len(rows) / batch_size) for rows, _ in groups)
    total = batches_per_epoch * epochs
    step, loss_value = 0, float("nan")
    bar = tqdm(total=total, desc="diffusion head BC", disable=not progress, mininterval=2)
    for _epoch in range(epochs):
        batches = []
        for g, (rows, _) in enumerate(groups):
            order = rng.permutation(len(rows))
            batches += [(g, order[s:s + batch_size]) for s in range(0, len(rows), batch_size)]
        for b in rng.permutation(len(batches)):
            g, local = batches[b]
            rows, tokens = groups[g]
            local_t = torch.from_numpy(local)
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            out_loss = head.bc_loss(tokens[local_t], targets[torch.from_numpy(rows[local])])
            optimizer.zero_grad(set_to_none=True)
            out_loss["loss"].backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            step += 1
            loss_value = out_loss["loss"].item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4g}")
    bar.close()

    # ---- report and save ---------------------------------------------------------------------------------------------
    pred = np.zeros((n, 24), np.float32)
    with torch.no_grad():
        for rows, tokens in groups:
            pred[rows] = torch.cat([head(tokens[s:s + 256]) for s in range(0, len(rows), 256)]).numpy()
    from irlvla_gym.plans.codec import action_to_plan

    ade, fde = displacement_errors(action_to_plan(pred), np.asarray(cache.plans))
    metrics = {"train_loss": loss_value, "train_ade": ade, "train_fde": fde, "num_scenes": n, "epochs": epochs,
               "seconds": time.perf_counter() - t_start, "init": init}
    net.requires_grad_(True)
    net.save_pretrained(out)
    (Path(out) / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m baselines.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(BC_DIFFUSION))
    p.add_argument("--init", default="bc_default")
    p.add_argument("--num-scenes", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    metrics = pretrain_diffusion(args.out, args.init, args.num_scenes, args.epochs, args.batch_size, args.lr,
                                 seed=args.seed, cache_dir=args.cache_dir, progress=not args.no_progress)
    print(json.dumps(metrics, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
