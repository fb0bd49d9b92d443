"""Evaluation report of a reward world model on a held-out split: ``irlvla rwm eval --ckpt CKPT --split S --out DIR``
(:class:`EvalConfig`, :func:`run_eval`, which calls :func:`evaluate`).

The held-out plans are an RWM dataset (:mod:`reward_models.dataset`; built into ``DIR/data`` unless ``--data`` names
an existing one). Reported (``report.json`` + ``report.md`` + ``calibration.png``):

* Spearman and Pearson of the predicted reward vs the true EPDMS, pooled over all plans (expert + candidates), and
  the mean per-scene Spearman;
* per sub-score: ROC AUC and accuracy (binary: P > 0.5 vs label; NC / DDC: arg-max class vs label, AUC of
  E[score] for "label = 1"), EP: mean absolute error and Pearson;
* best-of-K: the true EPDMS of the candidate the RWM ranks first vs the oracle's best candidate and the expert;
* the speed ratio vs the scorer (:func:`speed_ratio`): one scene x 256 vocabulary plans, ``score_plans`` fast path
  (simulation + scoring) vs the RWM, with the per-scene work of both sides (the scorer's scene context, the RWM's
  scene encoding) cached, and included (see ``benchmarks/rwm.py``).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irlvla_gym.configs import count_or_all, option
from reward_models.dataset import OBS_KEYS, SOURCES, CandidateConfig, build_dataset, load_dataset, obs_entries
from reward_models.metrics import best_of_k, best_of_k_gaps, bootstrap_mean_ci, pearson, roc_auc, spearman

if TYPE_CHECKING:
    from reward_models.model import RewardWorldModel


@dataclass
class EvalConfig:
    """One ``irlvla rwm eval`` run (each field is the CLI flag of the same name; :func:`run_eval`)."""

    ckpt: str
    """checkpoint directory or shipped name ('default', 'policy_aware')"""
    out: str
    """report directory (report.json, report.md, calibration.png)"""
    split: str = "synthetic-test"
    """held-out synthetic split or scene-store directory"""
    data: str | None = None
    """an existing RWM dataset of the split (else built in OUT/data)"""
    num_scenes: int | None = option(300, type=count_or_all)
    """scenes of the dataset built in OUT/data (0: all, as in irlvla leaderboard)"""
    workers: int = 1
    """processes building the dataset"""
    speed_scenes: int = 5
    """scenes of the speed measurement against the scorer (0: none)"""
    compare: str | None = None
    """another checkpoint: paired best-of-K comparison on the same scenes"""
    seed: int = 0
    """seed of the dataset built in OUT/data"""
    progress: bool = True
    """progress bars"""


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """The fidelity report of ``cfg`` (:func:`evaluate`); returns the report."""
    return evaluate(cfg.ckpt, cfg.out, split=cfg.split, data=cfg.data, num_scenes=cfg.num_scenes, seed=cfg.seed,
                    workers=cfg.workers, speed_scenes=cfg.speed_scenes, progress=cfg.progress, compare=cfg.compare)


def _under_torch(context: str):
    """Decorator: run the function inside ``torch.<context>()``, importing torch only when it is called (the configs
    of this module build ``irlvla rwm eval --help`` without torch)."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            import torch

            with getattr(torch, context)():
                return fn(*args, **kwargs)
        return run
    return wrap


@_under_torch("no_grad")
def predict_dataset(model: RewardWorldModel, data, batch_scenes: int = 16) -> dict[str, np.ndarray]:
    """Expected sub-scores and reward for every plan of a loaded dataset: name -> (N, M)."""
    model.eval()
    out: dict[str, list] = {}
    for s in range(0, len(data), batch_scenes):
        idx = np.arange(s, min(s + batch_scenes, len(data)))
        obs = {k: data.obs[k][idx] for k in obs_entries(data.obs)}
        pred = model(obs, data.plans[idx])
        for k, v in pred.expected.items():
            out.setdefault(k, []).append(v.numpy())
        out.setdefault("reward", []).append(pred.reward.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@_under_torch("inference_mode")
def speed_ratio(model: RewardWorldModel, source: str = "synthetic-test", num_scenes: int = 5, k: int = 256,
                repeats: int = 3) -> dict[str, float]:
    """Seconds per batch of ``k`` plans in one scene, scorer (``score_plans`` fast path) vs RWM, same plans.

    Per-scene work cached on both sides: ``scorer_s`` (warm scene context) vs ``rwm_score_s`` (``score`` with a
    cached scene encoding), ratio ``ratio_cached``. Included on both sides: ``scorer_cold_s`` (a fresh context) vs
    ``rwm_model_s`` (scene encoding + scoring from the obs dict), ratio ``ratio_model``. ``rwm_with_obs_s`` adds
    building the observation from the scene. Best of ``repeats`` per scene, median over scenes; run with one
    thread (``OMP_NUM_THREADS=1``) for per-core numbers.
    """
    from irlvla_gym.scenes.source import SceneSource
    from irlvla_gym.plans.vocabulary import load_vocabulary
    from irlvla_gym.metrics import prepare_scene, score_plans
    from irlvla_gym.obs.registry import ObservationBuilder

    plans = load_vocabulary(256)[:k]
    src = SceneSource(source)
    builder = ObservationBuilder(OBS_KEYS, model.config.obs_config)
    rows = []
    num_scenes = min(num_scenes, len(src))  # a small store may hold fewer scenes than the timing wants
    for i in range(num_scenes):
        scene = src.load(i)
        ctx = prepare_scene(scene)
        score_plans(scene, plans[:4], context=ctx)  # warm caches (map index)
        t_score = min(_timed(lambda: score_plans(scene, plans, context=ctx)) for _ in range(repeats))
        t_cold = min(_timed(lambda: score_plans(scene, plans)) for _ in range(repeats))
        obs = builder.observe(scene)
        plans32 = plans.astype(np.float32)
        model.predict_reward(obs, plans32)
        t_model = min(_timed(lambda: model.predict_reward(obs, plans32)) for _ in range(repeats))
        enc = model.encode_scene(obs)
        t_only = min(_timed(lambda: model.score(enc, plans32)) for _ in range(repeats))
        t_obs = min(_timed(lambda: ObservationBuilder(OBS_KEYS, model.config.obs_config).observe(scene))
                    for _ in range(repeats))
        rows.append((t_score, t_cold, t_model, t_only, t_obs))
    a = np.median(np.asarray(rows), axis=0)
    return {"plans": k, "scenes": num_scenes, "scorer_s": float(a[0]), "scorer_cold_s": float(a[1]),
            "rwm_model_s": float(a[2]), "rwm_score_s": float(a[3]), "obs_build_s": float(a[4]),
            "rwm_with_obs_s": float(a[2] + a[4]), "ratio_cached": float(a[0] / a[3]),
            "ratio_model": float(a[1] / a[2]), "ratio_with_obs": float(a[1] / (a[2] + a[4]))}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compute_report(pred: dict[str, np.ndarray], data) -> dict[str, Any]:
    """All metrics of the report from predictions (:func:`predict_dataset`) and the labelled dataset."""
    from reward_models.model import BINARY, SUB_SCORES, THREE_WAY

    true = data.labels["epdms"]
    r = pred["reward"]
    per_scene = [spearman(r[i], true[i]) for i in range(len(true))]
    rep: dict[str, Any] = {
        "scenes": len(true), "plans_per_scene": int(true.shape[1]),
        "spearman": spearman(r, true), "pearson": pearson(r, true),
        "spearman_candidates": spearman(r[:, 1:], true[:, 1:]),
        "spearman_per_scene_mean": float(np.nanmean(per_scene)),
        "mae_epdms": float(np.abs(r - true).mean()),
    }
    subs = {}
    for n in SUB_SCORES:
        lab, p = data.labels[n], pred[n]
        if n in BINARY:
            pos = lab > 0.5
            subs[n] = {"auc": roc_auc(p, pos), "accuracy": float(np.mean((p > 0.5) == pos)),
                       "positive_rate": float(pos.mean())}
        elif n in THREE_WAY:
            cls_true = np.round(lab * 2)
            cls_pred = np.round(np.clip(p, 0, 1) * 2)  # expected value rounded to the nearest class
            subs[n] = {"auc": roc_auc(p, lab > 0.75), "accuracy": float(np.mean(cls_true == cls_pred)),
                       "positive_rate": float(np.mean(lab > 0.75))}
        else:
            subs[n] = {"mae": float(np.abs(p - lab).mean()), "pearson": pearson(p, lab)}
    rep["subscores"] = subs
    cand_pred, cand_true = r[:, 1:], true[:, 1:]
    sel = best_of_k(cand_pred, cand_true)
    sel["expert"] = float(true[:, 0].mean())
    sel["rwm_prefers_expert"] = float(np.mean(r[:, 0] >= r[:, 1:].max(axis=1)))
    rep["best_of_k"] = sel
    src = data.sources
    rep["by_source"] = {SOURCES[s]: {"plans": int((src == s).sum()), "true_epdms": float(true[src == s].mean()),
                                      "pred_reward": float(r[src == s].mean())}
                        for s in range(len(SOURCES)) if (src == s).any()}
    return rep


def calibration_plot(pred: np.ndarray, true: np.ndarray, path: Path, bins: int = 10) -> list[dict]:
    """Reliability diagram (mean true EPDMS per predicted-reward bin) + scatter; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, t = pred.ravel(), true.ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        m = which == b
        if m.any():
            table.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(m.sum()),
                          "mean_pred": float(p[m].mean()), "mean_true": float(t[m].mean())})
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    ax[0].plot([0, 1], [0, 1], "k--", lw=1)
    ax[0].plot([r["mean_pred"] for r in table], [r["mean_true"] for r in table], "o-")
    ax[0].set(xlabel="predicted reward (bin mean)", ylabel="true EPDMS (bin mean)", title="calibration",
              xlim=(0, 1), ylim=(0, 1))
    rng = np.random.default_rng(0)
    sub = rng.choice(len(p), size=min(len(p), 5000), replace=False)
    ax[1].scatter(t[sub], p[sub], s=3, alpha=0.3)
    ax[1].plot([0, 1], [0, 1], "k--", lw=1)
    ax[1].set(xlabel="true EPDMS", ylabel="predicted reward", title="plans (sample)", xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    from irlvla_gym.utils import atomic_write

    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return table


def markdown(rep: dict[str, Any], ckpt: str) -> str:
    s = rep["best_of_k"]
    lines = [
        f"# RWM evaluation: `{ckpt}` on {rep['split']} ({rep['scenes']} scenes x {rep['plans_per_scene']} plans)", "",
        "| metric | value | goal |", "|---|---|---|",
        f"| Spearman (pooled, all plans) | {rep['spearman']:.4f} | >= 0.85 |",
        f"| Pearson (pooled) | {rep['pearson']:.4f} | |",
        f"| Spearman (candidates only) | {rep['spearman_candidates']:.4f} | |",
        f"| Spearman (per scene, mean) | {rep['spearman_per_scene_mean']:.4f} | |",
        f"| MAE reward vs EPDMS | {rep['mae_epdms']:.4f} | |",
        f"| best-of-K: RWM pick EPDMS | {s['rwm_pick']:.4f} | |",
        f"| best-of-K: oracle pick EPDMS | {s['oracle_pick']:.4f} | |",
        f"| best-of-K gap (oracle - RWM) | {s['gap']:.4f} | <= 0.03 |",
        f"| best-of-K gap: bootstrap 95 % interval | {s['gap_ci'][0]:.4f} - {s['gap_ci'][1]:.4f} | |",
        f"| best-of-K gap per block of 100 scenes | {' / '.join(f'{g:.3f}' for g in s['gap_blocks'])} | |",
        f"| scenes with the pick within 0.01 of the oracle / 0.2 or more below it | "
        f"{s['within_0.01']:.3f} / {s['blunders']} | |",
        f"| expert EPDMS | {s['expert']:.4f} | |",
        f"| RWM ranks the expert above all candidates | {s['rwm_prefers_expert']:.3f} | |",
    ]
    cmp_ = rep.get("compare")
    if cmp_:
        lines.append(f"| best-of-K gap of `{cmp_['checkpoint']}` / paired difference (this - that), 95 % interval | "
                     f"{cmp_['gap']:.4f} / {cmp_['gap_difference']:+.4f} ({cmp_['ci'][0]:+.4f} to {cmp_['ci'][1]:+.4f}) | |")
    sp = rep.get("speed")
    if sp:
        lines += [f"| speed: scorer, {sp['plans']} plans / scene, warm / fresh context | "
                  f"{sp['scorer_s'] * 1e3:.1f} / {sp['scorer_cold_s'] * 1e3:.1f} ms | |",
                  f"| speed: RWM score (encoding cached) / encode + score | "
                  f"{sp['rwm_score_s'] * 1e3:.2f} / {sp['rwm_model_s'] * 1e3:.2f} ms | |",
                  f"| speed ratio, per-scene work cached on both sides | {sp['ratio_cached']:.1f}x | >= 20x |",
                  f"| speed ratio, per-scene work included on both sides | {sp['ratio_model']:.1f}x | >= 20x |",
                  f"| speed ratio, RWM + building the obs (fresh scorer context) | {sp['ratio_with_obs']:.1f}x | |"]
    lines += ["", "## Sub-scores", "", "| sub-score | AUC | accuracy | positive rate | EP MAE | EP Pearson |",
              "|---|---|---|---|---|---|"]
    for n, v in rep["subscores"].items():
        if "auc" in v:
            lines.append(f"| {n} | {v['auc']:.4f} | {v['accuracy']:.4f} | {v['positive_rate']:.3f} | | |")
        else:
            lines.append(f"| {n} | | | | {v['mae']:.4f} | {v['pearson']:.4f} |")
    lines += ["", "## By candidate source", "", "| source | plans | true EPDMS | predicted reward |",
              "|---|---|---|---|"]
    for n, v in rep["by_source"].items():
        lines.append(f"| {n} | {v['plans']} | {v['true_epdms']:.4f} | {v['pred_reward']:.4f} |")
    lines += ["", "![calibration](calibration.png)", ""]
    return "\n".join(lines)


def evaluate(ckpt: str, out: str, split: str = "synthetic-test", data: str | None = None,
             num_scenes: int | None = 300, seed: int = 0, workers: int = 1, speed_scenes: int = 5,
             progress: bool = True, compare: str | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``calibration.png`` into ``out``; returns the report.

    ``compare``: another checkpoint scored on the same scenes; the report adds its best-of-K gap and the paired
    difference of the per-scene gaps with a bootstrap 95 % interval."""
    from reward_models import load_model

    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    model = load_model(None if ckpt == "default" else ckpt)
    if data is None:
        data = str(out_p / "data")
        build_dataset(split, data, num_scenes=num_scenes, seed=seed, workers=workers, progress=progress,
                      candidates=CandidateConfig(), obs_config=model.config.obs_config)
    ds = load_dataset(data)
    pred = predict_dataset(model, ds)
    rep = compute_report(pred, ds)
    rep["split"] = ds.manifest["source"]
    rep["data"] = str(data)
    rep["checkpoint"] = str(ckpt)
    rep["calibration"] = calibration_plot(pred["reward"], ds.labels["epdms"], out_p / "calibration.png")
    if compare:
        other = predict_dataset(load_model(compare), ds)["reward"][:, 1:]
        true = ds.labels["epdms"][:, 1:]
        diff = best_of_k_gaps(pred["reward"][:, 1:], true) - best_of_k_gaps(other, true)
        rep["compare"] = {"checkpoint": str(compare), "gap": float(best_of_k_gaps(other, true).mean()),
                          "gap_difference": float(diff.mean()), "ci": bootstrap_mean_ci(diff)}
    if speed_scenes:
        rep["speed"] = speed_ratio(model, ds.manifest["source"], num_scenes=speed_scenes)
    from irlvla_gym.utils import atomic_write

    with atomic_write(out_p / "report.json", "w") as fh:
        json.dump(rep, fh, indent=1)
    with atomic_write(out_p / "report.md", "w") as fh:
        fh.write(markdown(rep, str(ckpt)))
    return rep


__all__ = ["EvalConfig", "calibration_plot", "compute_report", "evaluate", "predict_dataset", "run_eval",
           "speed_ratio"]
