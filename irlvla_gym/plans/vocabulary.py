"""Trajectory vocabulary for ``action_type="vocabulary"``: K plans clustered (k-means) from expert plans.

The default K = 256 vocabulary ships with the package (``irlvla_gym/plans/data/vocabulary_256.json``). It was made by::

    python -m irlvla_gym.plans.vocabulary --k 256 --num-scenes 2048 --out irlvla_gym/plans/data/vocabulary_256.json

i.e. :func:`build_vocabulary` on the expert plans of the first 2,048 ``synthetic-train`` scenes. Any other K is
built on first use from the first ``DEFAULT_NUM_SCENES`` scenes (about a minute) and cached as
``<cache dir>/vocabulary/vocabulary_<K>.npy`` (cache dir: ``$IRLVLA_CACHE`` or ``~/.cache/irlvla_gym``).

Clustering: k-means (k-means++ initialisation, Lloyd iterations, numpy, seeded) on the flattened plans with yaw
weighted by ``YAW_WEIGHT`` metres per radian, so a 0.1 rad heading difference counts like 1 m of position. The
centroids are sorted by their final x then y, so index order is stable for a given input.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from irlvla_gym.scenes.scene import NUM_FUTURE
from irlvla_gym.utils import cache_dir

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_K = 256
DEFAULT_NUM_SCENES = 1024
YAW_WEIGHT = 10.0  # m per rad in the clustering distance


def expert_plans(split: str = "synthetic-train", num_scenes: int = DEFAULT_NUM_SCENES) -> np.ndarray:
    """(M, 8, 3) expert future plans of the first ``num_scenes`` scenes of a synthetic split (failures skipped)."""
    from irlvla_gym.scenes.scene import Scene
    from irlvla_gym.scenes.synthetic import iter_scenes

    plans = [s.ego.future for s in iter_scenes(split, num_scenes) if isinstance(s, Scene)]
    return np.stack(plans).astype(np.float64)


def kmeans(points: np.ndarray, k: int, *, iters: int = 50, seed: int = 0) -> np.ndarray:
    """k-means++ then Lloyd iterations. ``points`` (M, D) -> (k, D) centroids (k <= M unique points required)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(points, np.float64)
    if len(x) < k:
        raise ValueError(f"need at least k={k} points to cluster, got {len(x)}")
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(len(x))]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for j in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres[j] = x[rng.choice(len(x), p=p)]
        d2 = np.minimum(d2, np.sum((x - centres[j]) ** 2, axis=1))
    for _ in range(iters):
        dist = (np.sum(x**2, 1)[:, None] - 2.0 * x @ centres.T + np.sum(centres**2, 1)[None])
        label = np.argmin(dist, axis=1)
        counts = np.bincount(label, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, label, x)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.allclose(new, centres):
            break
        centres = new
    return centres


def build_vocabulary(k: int = DEFAULT_K, plans: np.ndarray | None = None, *, split: str = "synthetic-train",
                     num_scenes: int = DEFAULT_NUM_SCENES, seed: int = 0) -> np.ndarray:
    """Cluster expert plans into a (k, 8, 3) vocabulary (see module docs)."""
    plans = expert_plans(split, num_scenes) if plans is None else np.asarray(plans, np.float64)
    feats = plans.copy()
    feats[..., 2] *= YAW_WEIGHT
    centres = kmeans(feats.reshape(len(feats), -1), k, seed=seed).reshape(k, NUM_FUTURE, 3)
    centres[..., 2] /= YAW_WEIGHT
    order = np.lexsort((centres[:, -1, 1], centres[:, -1, 0]))
    return centres[order]


def save_vocabulary_json(vocab: np.ndarray, path: str | os.PathLike, **meta) -> None:
    Path(path).write_text(json.dumps({"shape": list(vocab.shape), "meta": meta,
                                      "plans": np.round(vocab, 4).tolist()}))


def load_vocabulary(k: int = DEFAULT_K) -> np.ndarray:
    """The (k, 8, 3) vocabulary: shipped (k = 256), cached, or built now and cached (see module docs)."""
    if k < 1:
        raise ValueError(f"vocabulary_size must be >= 1, got {k}")
    shipped = DATA_DIR / f"vocabulary_{k}.json"
    if shipped.exists():
        return np.asarray(json.loads(shipped.read_text())["plans"], np.float64)
    cached = cache_dir() / "vocabulary" / f"vocabulary_{k}.npy"
    if cached.exists():
        return np.load(cached, allow_pickle=False)
    vocab = build_vocabulary(k, num_scenes=max(DEFAULT_NUM_SCENES, 2 * k))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vocab)
    os.replace(tmp, cached)
    return vocab


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--num-scenes", type=int, default=2048)
    parser.add_argument("--split", default="synthetic-train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    vocab = build_vocabulary(args.k, split=args.split, num_scenes=args.num_scenes, seed=args.seed)
    save_vocabulary_json(vocab, args.out, split=args.split, num_scenes=args.num_scenes, seed=args.seed,
                         yaw_weight=YAW_WEIGHT, command="python -m irlvla_gym.plans.vocabulary --k "
                         f"{args.k} --num-scenes {args.num_scenes} --out {Path(args.out).name}")
    print(f"wrote {args.out}: {vocab.shape}")


__all__ = ["DATA_DIR", "DEFAULT_K", "DEFAULT_NUM_SCENES", "YAW_WEIGHT", "build_vocabulary", "expert_plans", "kmeans",
           "load_vocabulary", "main", "save_vocabulary_json"]


if __name__ == "__main__":
    main()
