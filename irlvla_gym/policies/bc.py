"""Behaviour cloning of the VLA network on expert plans: ``irlvla bc``.

One file, top to bottom (CleanRL style): hyperparameters (:class:`BCConfig`, one CLI flag per field), the
observation cache, the training loop (data -> loss -> update -> logging), validation, checkpoints and resume.

Targets: the logged expert plan ``scene.ego.future`` (8, 3) mapped to the env's trajectory action with
:func:`irlvla_gym.plans.codec.plan_to_action` (the (24,) normalised plan PPO acts in). Gaussian head: MSE of the
mean (or ``--loss nll``); diffusion head: its denoising loss plus the MSE of its deterministic sample.

Observation cache. The observations of the training (and validation) scenes are computed once with the batched
observation builder and kept as uncompressed ``.npy`` files read through ``np.load(mmap_mode="r")`` (no pickle)::

    <cache>/<source>-n<N>-<keys>-<hash>/
        <key>.npy       (N, ...) observation entries, env dtypes (uint8 images, float32 ego, int64 tokens)
        action.npy      (N, 24) float32 expert actions       plan.npy (N, 8, 3) float64 expert plans
        tokens.npy      (N,) scene tokens                    meta.json written last (no meta = incomplete)

``<cache>`` is ``--cache-dir``, default ``$IRLVLA_CACHE/bc_obs`` (``$IRLVLA_CACHE`` defaults to
``~/.cache/irlvla_gym``); about 0.1 MB per scene with the camera (3,000 scenes: ~290 MB). Building one prints where
and how big. The folder is bounded: after a build, the least recently used complete entries are removed while it
holds more than ``$IRLVLA_BC_CACHE_GB`` GB (default :data:`DEFAULT_CACHE_GB`; ``0`` switches the bound off); entries
used in the last :data:`CACHE_IN_USE_S` seconds (other runs may be reading them) are never removed.

Output directory (``--out``)::

    config.json, model.safetensors   the network (VLANetwork.from_pretrained(out)), rewritten every epoch
    bc_metrics.json                  validation history (ADE/FDE/EPDMS per epoch, constant-velocity baseline)
    trainer/state.json               epoch, step, config, history; points at the two files below (written last)
    trainer/model-EEEE.safetensors, trainer/optimizer-EEEE.safetensors   the resumable state of epoch EEEE
    tb/                              TensorBoard logs (if tensorboard is installed)

Every file is written atomically, and ``state.json`` only after the files it names, so an interrupted run resumes
from its last finished epoch: rerun the same command (``--restart`` starts over).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from irlvla_gym.configs import add_arguments, comma_list, count_or_all, from_args, option
from irlvla_gym.policies.config import VLAConfig, network_input_keys

CACHE_VERSION = 1
CACHE_LIMIT_ENV = "IRLVLA_BC_CACHE_GB"
"""Environment variable: size bound of the observation cache folder in GB (``0``: no bound)."""
DEFAULT_CACHE_GB = 2.0
"""Default bound of the observation cache folder (GB)."""
CACHE_IN_USE_S = 3600.0
"""An entry used this recently is never evicted (another run may have it memory-mapped)."""


@dataclass
class BCConfig:
    """Hyperparameters of ``irlvla bc``: each field is the CLI flag of the same name (``_`` -> ``-``; help text =
    the field's docstring, :mod:`irlvla_gym.configs`). Optimisation: AdamW, linear warm-up then cosine decay to 0
    over all steps, gradient-norm clipping."""

    out: str = option("runs/bc", required=True)
    """output directory (network checkpoint, trainer state, TensorBoard logs)"""
    split: str = "synthetic-train"
    """synthetic split of the training scenes (used when --scenes is not given)"""
    scenes: str | None = option(None, metavar="STORE")
    """scene-store directory to train on instead (any source)"""
    num_scenes: int | None = option(2000, type=count_or_all)
    """train on the first N scenes (0 on the command line, None in Python: all)"""
    val_split: str = "synthetic-val"
    """synthetic split of the validation scenes (used when --val-scenes is not given)"""
    val_scenes: str | None = option(None, metavar="STORE")
    """scene-store directory of the validation scenes instead"""
    num_val_scenes: int = 200
    """validate on the first N validation scenes (ADE / FDE every epoch)"""
    val_score_scenes: int = 32
    """validation scenes also scored with EPDMS: the first M of the validation scenes (0: none)"""
    score_every: int = 1
    """score EPDMS every k epochs (and always after the last one)"""
    epochs: int = 20
    """passes over the training scenes"""
    batch_size: int = 64
    """scenes per update"""
    lr: float = 1e-3
    """peak learning rate (after the warm-up)"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    warmup_steps: int = 100
    """updates of linear learning-rate warm-up"""
    grad_clip: float = 1.0
    """gradient-norm clipping"""
    obs_keys: tuple[str, ...] | None = option(None, type=comma_list)
    """observation keys of the network, comma-separated subset of camera,bev,ego,instruction (default: the
    VLAConfig default camera + ego + instruction)"""
    head: Literal["gaussian", "diffusion"] = "gaussian"
    """planning head: Gaussian (MSE / NLL of the mean) or diffusion (denoising loss + MSE of its sample)"""
    loss: Literal["mse", "nll"] = "mse"
    """loss of the Gaussian head"""
    vla_config: dict[str, Any] = option(default_factory=dict)
    """further VLAConfig fields as JSON, e.g. '{"hidden": 96}'"""
    target_plans: str | None = None
    """plan file (the ``irlvla score`` format: token -> (8, 3) poses, e.g. from ``irlvla rwm greedy-plans``) whose
    plans replace the expert's as training targets; every training scene needs one. Validation ADE / FDE stay
    against the expert"""
    init: str | None = None
    """start from this VLA checkpoint (directory or shipped name, e.g. 'bc_default') instead of a fresh network"""
    cache_dir: str | None = None
    """observation cache root (default: $IRLVLA_CACHE/bc_obs, i.e. ~/.cache/irlvla_gym/bc_obs; about 0.1 MB per
    scene with the camera; bounded to $IRLVLA_BC_CACHE_GB GB, default 2, least recently used entries removed)"""
    seed: int = 0
    """torch / numpy seed"""
    tensorboard: bool = True
    """write TensorBoard logs"""
    progress: bool = True
    """progress bars"""
    restart: bool = False
    """ignore a trainer state in --out and start over"""

    def __post_init__(self) -> None:
        self.score_every = max(1, int(self.score_every))  # 0 or less: every epoch

    def network_config(self) -> VLAConfig:
        """The :class:`VLAConfig` this run trains (``vla_config`` overrides + ``obs_keys`` + ``head``)."""
        values = dict(self.vla_config)
        if self.obs_keys:
            values["obs_keys"] = tuple(self.obs_keys)
        values["head"] = self.head
        return VLAConfig.from_dict(values)


# ====================================================================================================================
# Observation cache
# ====================================================================================================================


def _scene_source(split: str, scenes: str | None, num: int | None):
    from irlvla_gym.scenes.source import SceneSource

    return SceneSource(scenes, split=split, num_scenes=num)


def _cache_root(cache_dir: str | None) -> Path:
    from irlvla_gym.utils import cache_dir as default_cache

    return Path(cache_dir) if cache_dir else Path(default_cache()) / "bc_obs"


def obs_cache_path(split: str, scenes: str | None, num: int | None, keys: Sequence[str],
                   cache_dir: str | None = None) -> Path:
    """Directory of the observation cache of a scene source + keys (default ObsConfig)."""
    name = scenes if scenes else split
    spec = json.dumps({"v": CACHE_VERSION, "source": os.path.abspath(name) if scenes else name, "num": num,
                       "keys": sorted(keys)}, sort_keys=True)
    digest = hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()
    label = Path(name).name if scenes else name
    return _cache_root(cache_dir) / f"{label}-n{num if num is not None else 'all'}-{'+'.join(sorted(keys))}-{digest}"


class ObsCache:
    """A built observation cache (see module docs): memory-mapped arrays, ``len()`` scenes.

    Attributes:
        obs: key -> (N, ...) read-only memmap. actions: (N, 24) float32. plans: (N, 8, 3) float64. tokens: (N,).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no complete observation cache at {self.path} (meta.json missing)")
        from irlvla_gym.utils import read_json

        self.meta = read_json(meta_path)
        self.keys = tuple(self.meta["keys"])
        self.obs = {k: np.load(self.path / f"{k}.npy", mmap_mode="r") for k in network_input_keys(self.keys)}
        self.actions = np.load(self.path / "action.npy", mmap_mode="r")
        self.plans = np.load(self.path / "plan.npy", mmap_mode="r")
        self.tokens = np.load(self.path / "tokens.npy")

    def __len__(self) -> int:
        return len(self.actions)

    def use_target_plans(self, plans: np.ndarray) -> None:
        """Train toward ``plans`` (N, 8, 3) (in this cache's scene order) instead of the expert's; the files on disk
        keep the expert plans."""
        from irlvla_gym.plans.codec import plan_to_action

        plans = np.asarray(plans, np.float64)
        if plans.shape != (len(self), 8, 3):
            raise ValueError(f"target plans must be ({len(self)}, 8, 3) for this cache, got {plans.shape}")
        self.plans, self.actions = plans, plan_to_action(plans).astype(np.float32)

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Observation entries of the scenes ``index`` (sorted for memmap locality by the caller)."""
        return {k: np.asarray(v[index]) for k, v in self.obs.items()}


def build_obs_cache(split: str, scenes: str | None, num: int | None, keys: Sequence[str],
                    cache_dir: str | None = None, progress: bool = True, chunk: int = 32) -> ObsCache:
    """Compute (once) and open the observation cache of the first ``num`` scenes of a split or store.

    Observations come from :class:`irlvla_gym.obs.ObservationBuilder` ``observe_batch`` at each scene's t0 (what the
    plan-once env observes, default ObsConfig). An incomplete cache (no ``meta.json``) is rebuilt.
    """
    from tqdm.auto import tqdm

    from irlvla_gym.plans.codec import plan_to_action
    from irlvla_gym.obs import ObservationBuilder
    from irlvla_gym.utils import atomic_write

    keys = tuple(keys)
    path = obs_cache_path(split, scenes, num, keys, cache_dir)
    entries = network_input_keys(keys)  # the keys and the masks of vector sets
    if (path / "meta.json").is_file():
        _touch(path)
        return ObsCache(path)
    source = _scene_source(split, scenes, num)
    n = len(source)
    builder = ObservationBuilder(keys)
    per_scene = sum(int(np.prod(sub.shape)) * np.dtype(sub.dtype).itemsize
                    for name, sub in builder.space.spaces.items() if name in entries) + 24 * 4 + 24 * 8
    print(f"bc: caching the observations of {n} scenes ({'+'.join(keys)}, ~{_mb(n * per_scene)}) in {path} "
          f"(--cache-dir or $IRLVLA_CACHE move it; ${CACHE_LIMIT_ENV} bounds the folder)", file=sys.stderr)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.lib.format.open_memmap(path / f"{name}.npy", mode="w+", dtype=sub.dtype,
                                              shape=(n,) + sub.shape)
              for name, sub in builder.space.spaces.items() if name in entries}
    actions = np.lib.format.open_memmap(path / "action.npy", mode="w+", dtype=np.float32, shape=(n, 24))
    plans = np.lib.format.open_memmap(path / "plan.npy", mode="w+", dtype=np.float64, shape=(n, 8, 3))
    tokens = []
    bar = tqdm(total=n, desc=f"observations {source.name}", unit="scene", disable=not progress, mininterval=2)
    for start in range(0, n, chunk):
        batch = [source.load(i) for i in range(start, min(n, start + chunk))]
        obs = builder.observe_batch(batch)
        for name, arr in arrays.items():
            arr[start:start + len(batch)] = obs[name]
        expert = np.stack([s.ego.future for s in batch]).astype(np.float64)
        plans[start:start + len(batch)] = expert
        actions[start:start + len(batch)] = plan_to_action(expert)
        tokens.extend(s.token for s in batch)
        bar.update(len(batch))
    bar.close()
    for arr in (*arrays.values(), actions, plans):
        arr.flush()
    del arrays, actions, plans
    np.save(path / "tokens.npy", np.array(tokens))
    meta = {"version": CACHE_VERSION, "source": source.name, "num": n, "keys": list(keys),
            "shapes": {k: list(s.shape) for k, s in builder.space.spaces.items() if k in entries}}
    with atomic_write(path / "meta.json", "w") as fh:
        json.dump(meta, fh, indent=2)
    total = sum(_tree_size(p) for p in cache_entries(path.parent))
    print(f"bc: wrote {_mb(_tree_size(path))} to {path} (the folder holds {_mb(total)})", file=sys.stderr)
    evict_obs_caches(path.parent, keep=path)
    return ObsCache(path)


def _mb(size: float) -> str:
    return f"{size / 1e6:,.0f} MB" if size < 1e9 else f"{size / 1e9:.2f} GB"


def _touch(path: Path) -> None:
    """Mark a cache entry as used now (its ``meta.json`` mtime: the eviction order); best effort."""
    try:
        os.utime(path / "meta.json")
    except OSError:
        pass


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def cache_entries(root: str | Path) -> list[Path]:
    """The entry directories of an observation cache folder (complete or not)."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def cache_limit_bytes() -> int | None:
    """The folder bound from ``$IRLVLA_BC_CACHE_GB`` (default :data:`DEFAULT_CACHE_GB`), None for ``0`` (no
    bound); ValueError naming the variable for a value that is not a number >= 0."""
    raw = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_CACHE_GB
    except ValueError:
        gb = -1.0
    if not math.isfinite(gb) or gb < 0:
        raise ValueError(f"{CACHE_LIMIT_ENV} must be a size in GB >= 0 (0: no bound), got {raw!r}")
    return None if gb == 0 else int(gb * 1e9)


def evict_obs_caches(root: str | Path, keep: str | Path | None = None, limit: int | None | Literal["env"] = "env",
                     in_use_s: float = CACHE_IN_USE_S) -> list[Path]:
    """Remove the least recently used complete entries of the cache folder ``root`` while it holds more than
    ``limit`` bytes (``"env"``: :func:`cache_limit_bytes`; None: no bound). ``keep``, incomplete entries (no
    ``meta.json``: maybe being built) and entries used in the last ``in_use_s`` seconds stay. Returns the removed
    entries (each reported on stderr)."""
    import shutil

    limit = cache_limit_bytes() if limit == "env" else limit
    if limit is None:
        return []
    entries = cache_entries(root)
    sizes = {p: _tree_size(p) for p in entries}
    total = sum(sizes.values())
    now = time.time()
    keep = Path(keep).resolve() if keep is not None else None
    order = sorted((p for p in entries if (p / "meta.json").is_file() and p.resolve() != keep),
                   key=lambda p: (p / "meta.json").stat().st_mtime)
    removed = []
    for p in order:
        if total <= limit or now - (p / "meta.json").stat().st_mtime < in_use_s:
            break
        shutil.rmtree(p, ignore_errors=True)
        total -= sizes[p]
        removed.append(p)
        print(f"bc: removed the least recently used observation cache {p} ({_mb(sizes[p])}; the folder is bounded "
              f"to {_mb(limit)} by ${CACHE_LIMIT_ENV})", file=sys.stderr)
    if total > limit:
        print(f"bc: the observation cache folder {root} holds {_mb(total)}, over ${CACHE_LIMIT_ENV} = {_mb(limit)}, "
              f"in entries in use or just built", file=sys.stderr)
    return removed


# ====================================================================================================================
# Validation
# ====================================================================================================================


def displacement_errors(pred: np.ndarray, expert: np.ndarray) -> tuple[float, float]:
    """Mean ADE and FDE (m) of plans (N, 8, 3) against expert plans (N, 8, 3) (xy only)."""
    d = np.linalg.norm(np.asarray(pred)[..., :2] - np.asarray(expert)[..., :2], axis=-1)  # (N, 8)
    return float(d.mean()), float(d[:, -1].mean())


def predict_plans(net, cache: ObsCache, batch_size: int = 64, limit: int | None = None) -> np.ndarray:
    """Metric plans (N, 8, 3) of the network (eval mode, deterministic mean) for the first ``limit`` cached scenes."""
    n = len(cache) if limit is None else min(limit, len(cache))
    out = [net.plan(cache.batch(np.arange(s, min(n, s + batch_size)))) for s in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 8, 3))


class EpdmsEvaluator:
    """Scores plans of the first M validation scenes with EPDMS (NAVSIM v2 human filter, log traffic, EP relative
    to PDM-Closed as in the env). The reference progress and the constant-velocity baseline are computed once and
    kept in ``<cache>/epdms_ref_<M>.npz``."""

    def __init__(self, split: str, scenes: str | None, cache: ObsCache, num: int, progress: bool = True):
        from irlvla_gym.utils import atomic_write

        self.num = min(int(num), len(cache))
        source = _scene_source(split, scenes, len(cache))
        self.scenes = [source.load(i) for i in range(self.num)]
        ref_path = cache.path / f"epdms_ref_{self.num}.npz"
        if ref_path.is_file():
            with np.load(ref_path) as f:
                self.reference_progress, self.cv_epdms = f["reference_progress"], f["cv_epdms"]
        else:
            from tqdm.auto import tqdm

            from irlvla_gym.planners import ConstantVelocityPlanner, pdm_reference_progress

            self.reference_progress = np.array([pdm_reference_progress(s) for s in tqdm(
                self.scenes, desc="PDM-Closed reference progress", disable=not progress, mininterval=2)])
            cv = ConstantVelocityPlanner().plan_batch(self.scenes)
            self.cv_epdms = self.score(cv)
            with atomic_write(ref_path) as fh:
                np.savez(fh, reference_progress=self.reference_progress, cv_epdms=self.cv_epdms)

    def score(self, plans: np.ndarray) -> np.ndarray:
        """(M,) EPDMS of plans (>= M, 8, 3), one per scene."""
        from irlvla_gym.metrics import score_plans

        return np.array([score_plans(s, plans[i], reference_progress=float(r)).epdms[0]
                         for i, (s, r) in enumerate(zip(self.scenes, self.reference_progress))])


# ====================================================================================================================
# Checkpoints
# ====================================================================================================================


def _save_optimizer(optimizer, path: Path, epoch: int) -> dict[str, Any]:
    """Optimizer tensors (``state.<param index>.<name>``) and the torch RNG state (``rng.torch``) to safetensors;
    returns the json-safe remainder (param groups)."""
    from safetensors.torch import save

    from irlvla_gym.utils import atomic_write

    sd = optimizer.state_dict()
    tensors = {f"state.{i}.{name}": v.detach().cpu().contiguous().reshape(v.shape)
               for i, st in sd["state"].items() for name, v in st.items() if hasattr(v, "detach")}
    import torch

    tensors["rng.torch"] = torch.get_rng_state()  # the diffusion loss draws noise: resumes continue the stream
    with atomic_write(path) as fh:
        fh.write(save(tensors, metadata={"epoch": str(epoch)}))
    return {"param_groups": sd["param_groups"]}


def _load_optimizer(optimizer, path: Path, groups: dict[str, Any]) -> None:
    """Inverse of :func:`_save_optimizer` (also restores the torch RNG state saved with it)."""
    from safetensors.torch import load_file

    import torch

    tensors = load_file(str(path))
    rng = tensors.pop("rng.torch", None)
    if rng is not None:
        torch.set_rng_state(rng)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def _save_checkpoint(out: Path, net, optimizer, epoch: int, step: int, cfg: BCConfig,
                     history: list[dict[str, Any]]) -> None:
    """Trainer files of this epoch, then ``state.json`` (naming them), then the exported network; old epochs go."""
    from safetensors.torch import save

    from irlvla_gym.utils import atomic_write

    trainer = out / "trainer"
    trainer.mkdir(parents=True, exist_ok=True)
    model_name, optim_name = f"model-{epoch:04d}.safetensors", f"optimizer-{epoch:04d}.safetensors"
    with atomic_write(trainer / model_name) as fh:
        fh.write(save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                      metadata={"epoch": str(epoch)}))
    groups = _save_optimizer(optimizer, trainer / optim_name, epoch)
    state = {"epoch": epoch, "step": step, "model": model_name, "optimizer": optim_name, "optimizer_groups": groups,
             "network_config": net.config.to_dict(), "bc_config": dataclasses.asdict(cfg), "history": history}
    with atomic_write(trainer / "state.json", "w") as fh:
        json.dump(state, fh, indent=2, default=list)
    for old in trainer.glob("*-*.safetensors"):
        if old.name not in (model_name, optim_name):
            old.unlink(missing_ok=True)
    net.save_pretrained(out, metadata={"epoch": str(epoch), "step": str(step)})
    with atomic_write(out / "bc_metrics.json", "w") as fh:
        json.dump({"epochs_done": epoch, "history": history}, fh, indent=2)


# ====================================================================================================================
# Training
# ====================================================================================================================


def train_bc(cfg: BCConfig) -> dict[str, Any]:
    """Run behaviour cloning (resuming from ``cfg.out`` when it holds a trainer state). Returns the last metrics."""
    import torch

    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads()
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    net, optimizer, (start_epoch, step, history) = _network_and_optimizer(cfg, out)

    # ---- data ----------------------------------------------------------------------------------------------------
    train = build_obs_cache(cfg.split, cfg.scenes, cfg.num_scenes, net.obs_keys, cfg.cache_dir, cfg.progress)
    if cfg.target_plans:
        from irlvla_gym.plans.files import plans_for_tokens

        train.use_target_plans(plans_for_tokens(cfg.target_plans, [str(t) for t in train.tokens]))
    val = build_obs_cache(cfg.val_split, cfg.val_scenes, cfg.num_val_scenes, net.obs_keys, cfg.cache_dir,
                          cfg.progress)
    scorer = EpdmsEvaluator(cfg.val_split, cfg.val_scenes, val, cfg.val_score_scenes, cfg.progress) \
        if cfg.val_score_scenes > 0 else None
    cv_ade, cv_fde = displacement_errors(_cv_plans(val), val.plans)
    baseline = {"cv_ade": cv_ade, "cv_fde": cv_fde,
                "cv_epdms": float(scorer.cv_epdms.mean()) if scorer is not None else None}
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs

    writer = _tensorboard(out / "tb") if cfg.tensorboard else None
    metrics: dict[str, Any] = history[-1] if history else {}
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            step, losses = _train_epoch(net, optimizer, train, cfg, epoch, step, total_steps, writer)
            elapsed = time.perf_counter() - t0

            # ---- validation --------------------------------------------------------------------------------------
            pred = predict_plans(net, val)
            ade, fde = displacement_errors(pred, val.plans)
            metrics = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)), "val_ade": ade,
                       "val_fde": fde, "samples_per_s": len(train) / max(elapsed, 1e-9), **baseline}
            if scorer is not None and (epoch % cfg.score_every == 0 or epoch == cfg.epochs):
                metrics["val_epdms"] = float(scorer.score(pred).mean())
            history.append(metrics)
            if writer is not None:
                for k in ("train_loss", "val_ade", "val_fde", "val_epdms"):
                    if k in metrics:
                        writer.add_scalar(f"val/{k}" if k.startswith("val") else f"train/{k}", metrics[k], step)
                writer.flush()
            _save_checkpoint(out, net, optimizer, epoch, step, cfg, history)
            print(_format_metrics(metrics), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume from {out} (last finished epoch is kept)",
              file=sys.stderr)
        raise
    finally:
        if writer is not None:
            writer.close()
    return metrics


def _network_and_optimizer(cfg: BCConfig, out: Path) -> tuple[Any, Any, tuple[int, int, list[dict[str, Any]]]]:
    """The network and its AdamW, fresh (or from ``cfg.init``) or restored from the trainer state in ``out``; and
    (last finished epoch, step, history)."""
    import torch

    from irlvla_gym.policies.network import VLANetwork

    state_path = out / "trainer" / "state.json"
    from irlvla_gym.utils import read_json

    resume = None if cfg.restart or not state_path.is_file() else read_json(state_path)
    if resume is not None:
        net = VLANetwork(VLAConfig.from_dict(resume["network_config"]), load_pretrained=False)
    elif cfg.init:
        net = VLANetwork.from_pretrained(cfg.init)
    else:
        net = VLANetwork(cfg.network_config())
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume is None:
        return net, optimizer, (0, 0, [])
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(out / "trainer" / resume["model"])), strict=True)
    _load_optimizer(optimizer, out / "trainer" / resume["optimizer"], resume["optimizer_groups"])
    start_epoch, step = int(resume["epoch"]), int(resume["step"])
    print(f"resuming {out} after epoch {start_epoch} (step {step})", file=sys.stderr)
    return net, optimizer, (start_epoch, step, list(resume["history"]))


def learning_rate(cfg: BCConfig, step: int, total_steps: int) -> float:
    """Learning rate at update ``step`` of ``total_steps``: linear warm-up over ``cfg.warmup_steps``, then cosine
    decay to 0."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def _train_epoch(net, optimizer, train: ObsCache, cfg: BCConfig, epoch: int, step: int, total_steps: int,
                 writer) -> tuple[int, list[float]]:
    """One epoch of updates; returns (step after it, per-update losses). The shuffle order depends only on seed +
    epoch, so a resumed run repeats it."""
    import torch
    from tqdm.auto import tqdm

    from irlvla_gym.policies.network import prepare_observations

    net.train()
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
    losses: list[float] = []
    bar = tqdm(range(math.ceil(len(train) / cfg.batch_size)), desc=f"bc epoch {epoch}/{cfg.epochs}",
               disable=not cfg.progress, mininterval=2, leave=False)
    for b in bar:
        idx = np.sort(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
        inputs = prepare_observations(train.batch(idx), net.obs_keys)
        target = torch.from_numpy(np.asarray(train.actions[idx]))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, total_steps)
        out_loss = net.bc_loss(inputs, target, cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        out_loss["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        losses.append(out_loss["loss"].item())
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
        if writer is not None and step % 10 == 0:
            writer.add_scalar("train/loss", losses[-1], step)
            writer.add_scalar("train/mse", out_loss["mse"].item(), step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            writer.add_scalar("train/lr", learning_rate(cfg, step, total_steps), step)
    bar.close()
    return step, losses


def _cv_plans(cache: ObsCache) -> np.ndarray:
    """Constant-velocity plans (N, 8, 3) from the cached ego speed (or from the expert when ``ego`` is not cached)."""
    from irlvla_gym.scenes.scene import FUTURE_TIMES

    if "ego" in cache.obs:
        speed = np.asarray(cache.obs["ego"][:, 20], np.float64)
    else:  # the first expert step is a good proxy for the t0 speed
        speed = np.linalg.norm(np.asarray(cache.plans[:, 0, :2]), axis=-1) / FUTURE_TIMES[0]
    plans = np.zeros((len(cache), len(FUTURE_TIMES), 3))
    plans[..., 0] = speed[:, None] * FUTURE_TIMES[None, :]
    return plans


def _tensorboard(path: Path):
    """A TensorBoard SummaryWriter, or None when tensorboard is not installed (lazy import)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard not installed: no TensorBoard logs", file=sys.stderr)
        return None
    return SummaryWriter(str(path))


def _format_metrics(m: dict[str, Any]) -> str:
    parts = [f"epoch {m['epoch']}", f"loss {m['train_loss']:.4g}", f"ADE {m['val_ade']:.3f} m (CV {m['cv_ade']:.3f})",
             f"FDE {m['val_fde']:.3f} m (CV {m['cv_fde']:.3f})"]
    if "val_epdms" in m:
        parts.append(f"EPDMS {m['val_epdms']:.4f} (CV {m['cv_epdms']:.4f})")
    parts.append(f"{m['samples_per_s']:.0f} samples/s")
    return " | ".join(parts)


def evaluate_checkpoint(path: str, split: str = "synthetic-val", scenes: str | None = None, num: int = 200,
                        score: int = 100, cache_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """ADE/FDE on ``num`` and EPDMS on ``score`` validation scenes of a saved network, with the constant-velocity
    baseline on the same scenes."""
    from irlvla_gym.policies.network import VLANetwork
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads()
    net = VLANetwork.from_pretrained(path)
    cache = build_obs_cache(split, scenes, num, net.obs_keys, cache_dir, progress)
    pred = predict_plans(net, cache)
    cv = _cv_plans(cache)
    ade, fde = displacement_errors(pred, cache.plans)
    cv_ade, cv_fde = displacement_errors(cv, cache.plans)
    result = {"checkpoint": str(path), "split": scenes or split, "num_scenes": len(cache), "ade": ade, "fde": fde,
              "cv_ade": cv_ade, "cv_fde": cv_fde}
    if score > 0:
        scorer = EpdmsEvaluator(split, scenes, cache, score, progress)
        result.update(score_scenes=scorer.num, epdms=float(scorer.score(pred).mean()),
                      cv_epdms=float(scorer.cv_epdms.mean()))
    return result


# ====================================================================================================================
# CLI
# ====================================================================================================================


def register(subparsers) -> None:
    """``irlvla bc``: train (or ``--eval-only`` evaluate) the VLA network by behaviour cloning."""
    p = subparsers.add_parser("bc", help="behaviour cloning of the VLA policy on expert plans",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p, BCConfig)
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate the network in --out (ADE/FDE on --num-val-scenes, EPDMS on --val-score-scenes)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = from_args(BCConfig, args)
    if args.eval_only:
        result = evaluate_checkpoint(cfg.out, cfg.val_split, cfg.val_scenes, cfg.num_val_scenes, cfg.val_score_scenes,
                                     cfg.cache_dir, cfg.progress)
        print(json.dumps(result, indent=2))
        return 0
    print(json.dumps(train_bc(cfg), indent=2))
    return 0


__all__ = ["BCConfig", "CACHE_IN_USE_S", "CACHE_LIMIT_ENV", "DEFAULT_CACHE_GB", "EpdmsEvaluator", "ObsCache",
           "build_obs_cache", "cache_entries", "cache_limit_bytes", "displacement_errors", "evaluate_checkpoint",
           "evict_obs_caches", "obs_cache_path", "predict_plans", "register", "train_bc"]
