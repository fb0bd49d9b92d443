"""The reward world model on real recordings: datasets of real windows, leave-one-source-out training and the
side-by-side fidelity table (``irlvla rwm loso`` / ``irlvla rwm eval-real``; reward_models/README.md, "Real data").

Real windows come from the samples in ``../shared/data`` (:func:`irlvla_gym.evaluation.real_data.iter_real_scenes`:
Argoverse 2 sensor logs, the nuScenes ScenarioNet scene with its Boston drivable area, the Waymo ScenarioNet
scenario). Their licences are non-commercial, so nothing here copies them into the repository: every product
(scene stores, RWM datasets, checkpoints, tables) goes under a work directory given on the command line.

Layout of a work directory ``WORK`` (dataset directories end in the observation settings' suffix, e.g.
``-agents64`` for 64 agent slots, :func:`obs_suffix`)::

    stores/<source>/                     scene store of every window of the source (store order = log, then time)
    eval/<set>/                          RWM datasets the table is computed on (seed 0, 64 candidates, no policy):
                                         synthetic-test scenes 300-499 and every window of each real source
    data/<source>-train-s<seed>/         training windows of a source (the first 75 %), candidates of seed <seed>
                                         with policy samples; --seeds gives several candidate sets per window
    data/<source>-val/                   validation windows of a source (the last 25 %: for AV2 the last of its 4
                                         logs; for the single-log sources the last quarter of the log in time)
    data/synthetic-train-<n>/, data/synthetic-val-<n>/   synthetic training (n scenes, with policy samples) and
                                         validation scenes (synthetic-train from 4200 on)
    holdout-<source>/                    checkpoint trained without any window of <source> (leave-one-source-out)
    all/                                 checkpoint trained on every source's training windows

Fidelity (:func:`scene_metrics`, per scene, then the mean over scenes with a percentile bootstrap 95 % interval
over scenes, :func:`summarise`): Spearman of predicted reward vs true EPDMS over the scene's plans (expert +
candidates), the best-of-K gap (true EPDMS of the oracle's best candidate minus that of the RWM's pick, over the 64
candidates), and whether the RWM ranks the expert above all candidates. Windows of one log overlap in time, so
intervals over windows are narrower than intervals over logs would be.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from reward_models.dataset import CandidateConfig, build_dataset, load_dataset
from reward_models.metrics import spearman
from reward_models.train import TrainConfig

REAL_SOURCES = ("av2", "nuscenes", "waymo")
"""Real sources known to :func:`irlvla_gym.evaluation.real_data.iter_real_scenes`."""
SYNTHETIC_EVAL = ("synthetic-test", 300, 200)
"""(split, first scene, number of scenes) of the synthetic rows of the table: scenes 300-499 of synthetic-test,
disjoint from the 300 scenes of the README's synthetic evaluation."""
VAL_SHARE = 0.25
"""Share of each real source's windows (the last ones in store order) kept for validation."""
METRICS = ("spearman", "gap", "expert_first")


def _require_sources(sources: Sequence[str], arg: str = "sources") -> tuple[str, ...]:
    bad = [s for s in sources if s not in REAL_SOURCES]
    if bad or not sources:
        raise ValueError(f"{arg}: unknown or no real source(s) {bad or list(sources)}; choose from {REAL_SOURCES}")
    return tuple(sources)


# ---- scene stores and datasets -------------------------------------------------------------------------------


def build_real_stores(data_dir: str | Path, work: str | Path, sources: Sequence[str] = REAL_SOURCES,
                      progress: bool = False) -> dict[str, Path]:
    """One scene store per real source under ``WORK/stores/<source>`` (kept when already built); returns
    source -> store path for the sources whose samples exist under ``data_dir``.

    Raises:
        FileNotFoundError: ``data_dir`` holds none of the requested sources' sample folders.
        ValueError: an unknown source in ``sources``.
    """
    from irlvla_gym.evaluation.real_data import iter_real_scenes, real_source_dirs
    from irlvla_gym.scenes.store import build_store

    sources = _require_sources(sources)
    present = [s for s in sources if real_source_dirs(data_dir)[s].is_dir()]
    if not present:
        raise FileNotFoundError(f"data_dir {data_dir}: none of the sample folders of {', '.join(sources)}")
    out = {}
    for source in present:
        store = Path(work) / "stores" / source
        if not (store / "manifest.json").is_file():
            skipped: list = []
            items = (scene for _, scene in iter_real_scenes(data_dir, sources=(source,),
                                                           on_skip=lambda _s, item: skipped.append(item)))
            build_store(items, store, split=f"real-{source}", source=source, shard_size=512, progress=progress)
            for item in skipped:
                print(f"rwm real: {source}: skipped {item}", file=sys.stderr)
        out[source] = store
    return out


def split_windows(num: int, val_share: float = VAL_SHARE) -> tuple[range, range]:
    """(training, validation) index ranges of a source's ``num`` windows: the last ``val_share`` (at least one
    window when ``num`` >= 2) for validation."""
    if not 0.0 <= val_share < 1.0:
        raise ValueError(f"val_share must be in [0, 1), got {val_share}")
    n_val = min(max(int(round(num * val_share)), 1 if num >= 2 and val_share > 0 else 0), num)
    return range(0, num - n_val), range(num - n_val, num)


def obs_suffix(obs_config: dict | None) -> str:
    """Directory-name suffix of datasets built with ``obs_config`` ("" for the defaults, "-agents64" for
    ``{"max_agents": 64}``): datasets of the same scenes and candidates under other observation settings."""
    if not obs_config:
        return ""
    short = {"agents_future": "future"}  # "-futurelogged"
    return "".join(f"-{short.get(k, k.replace('max_', ''))}{v}" for k, v in sorted(obs_config.items()))


def real_datasets(stores: dict[str, Path], work: str | Path, seeds: Sequence[int] = (1,),
                  policy: str | None = "bc_default", obs_config: dict | None = None, workers: int = 1,
                  progress: bool = False) -> dict[str, dict[str, Any]]:
    """Training and validation RWM datasets of every store (module docs, ``WORK/data``); built or resumed.

    Returns source -> ``{"train": [dataset dir per seed], "val": dataset dir or None}``. Training sets carry
    ``policy`` samples (as the default checkpoint's data); validation sets are like the evaluation sets (seed 0, no
    policy). ``obs_config``: observation settings of the model inputs (e.g. ``{"max_agents": 64}``).
    """
    from irlvla_gym.scenes.source import SceneSource

    out: dict[str, dict[str, Any]] = {}
    sfx = obs_suffix(obs_config)
    for source, store in stores.items():
        tr, va = split_windows(len(SceneSource(str(store))))
        entry: dict[str, Any] = {"train": [], "val": None}
        for seed in seeds:
            d = Path(work) / "data" / f"{source}-train-s{seed}{sfx}"
            build_dataset(str(store), d, start=tr.start, num_scenes=len(tr), seed=seed, policy=policy,
                          workers=workers, progress=progress, candidates=CandidateConfig(), obs_config=obs_config)
            entry["train"].append(str(d))
        if len(va):
            d = Path(work) / "data" / f"{source}-val{sfx}"
            build_dataset(str(store), d, start=va.start, num_scenes=len(va), seed=0, workers=workers,
                          progress=progress, candidates=CandidateConfig(), obs_config=obs_config)
            entry["val"] = str(d)
        out[source] = entry
    return out


def eval_datasets(data_dir: str | Path, work: str | Path, sources: Sequence[str] = REAL_SOURCES,
                  synthetic: tuple[str, int, int] | None = SYNTHETIC_EVAL, obs_config: dict | None = None,
                  workers: int = 1, progress: bool = False, windows: int | None = None) -> dict[str, str]:
    """The datasets of the table (``WORK/eval/<set><obs suffix>``; seed 0, 64 candidates + the expert, no policy
    samples): set name -> dataset dir. The plans and labels do not depend on ``obs_config``, so rows of models with
    other observation settings compare like with like. ``synthetic``: (split, start, count) or None; real sources
    without samples under ``data_dir`` are left out (a note on stderr); ``windows``: only the first ``windows``
    windows of each real source (quick checks; default all)."""
    sets: dict[str, str] = {}
    sfx = obs_suffix(obs_config)
    if synthetic is not None:
        split, start, num = synthetic
        d = Path(work) / "eval" / f"{split}{sfx}"
        build_dataset(split, d, start=start, num_scenes=num, seed=0, workers=workers, progress=progress,
                      candidates=CandidateConfig(), obs_config=obs_config)
        sets[split] = str(d)
    try:
        stores = build_real_stores(data_dir, work, sources, progress=progress)
    except FileNotFoundError as exc:
        print(f"rwm real: no real windows ({exc})", file=sys.stderr)
        stores = {}
    for source, store in stores.items():
        d = Path(work) / "eval" / f"{source}{sfx}{'' if windows is None else f'-w{windows}'}"
        build_dataset(str(store), d, num_scenes=windows, seed=0, workers=workers, progress=progress,
                      candidates=CandidateConfig(), obs_config=obs_config)
        sets[source] = str(d)
    return sets


def synthetic_datasets(work: str | Path, train_scenes: int, val_scenes: int, policy: str | None = "bc_default",
                       obs_config: dict | None = None, workers: int = 1, progress: bool = False) -> tuple[str, str]:
    """(training, validation) synthetic RWM datasets under ``WORK/data``: ``synthetic-train`` scenes
    0 .. train_scenes - 1 with ``policy`` samples, and scenes 4200 .. 4200 + val_scenes - 1 (the README's
    validation range) without."""
    sfx = obs_suffix(obs_config)
    tr = Path(work) / "data" / f"synthetic-train-{train_scenes}{sfx}"
    va = Path(work) / "data" / f"synthetic-val-{val_scenes}{sfx}"
    build_dataset("synthetic-train", tr, num_scenes=train_scenes, seed=0, policy=policy, workers=workers,
                  progress=progress, candidates=CandidateConfig(), obs_config=obs_config)
    build_dataset("synthetic-train", va, start=4200, num_scenes=val_scenes, seed=0, workers=workers,
                  progress=progress, candidates=CandidateConfig(), obs_config=obs_config)
    return str(tr), str(va)


# ---- metrics ---------------------------------------------------------------------------------------------------


def scene_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per-scene fidelity of predicted rewards ``pred`` (N, M) against true EPDMS ``true`` (N, M), expert at slot 0.

    Returns (N,) arrays: ``spearman`` (over the scene's M plans; NaN where either side is constant), ``gap``
    (best true candidate EPDMS minus the true EPDMS of the candidate with the highest predicted reward; candidates
    = slots 1..M-1), ``expert_first`` (1.0 where the expert's predicted reward is at least every candidate's).

    Raises:
        ValueError: ``pred`` and ``true`` differ in shape or have fewer than 2 plans per scene.
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] < 2:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be (N, M) with M >= 2")
    n = np.arange(len(true))
    cand_p, cand_t = pred[:, 1:], true[:, 1:]
    return {"spearman": np.array([spearman(pred[i], true[i]) for i in n]),
            "gap": cand_t.max(axis=1) - cand_t[n, cand_p.argmax(axis=1)],
            "expert_first": (pred[:, 0] >= cand_p.max(axis=1)).astype(np.float64)}


def bootstrap_ci(values: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of the mean of ``values`` (N,) over a percentile bootstrap of its entries (NaNs
    dropped first; all NaN gives NaNs)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), (draws, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(per_scene: dict[str, np.ndarray], draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """:data:`METRICS` -> (mean, low, high) over scenes (:func:`bootstrap_ci`), plus ``scenes``."""
    out: dict[str, Any] = {k: bootstrap_ci(per_scene[k], draws, seed) for k in METRICS}
    out["scenes"] = int(len(per_scene["gap"]))
    return out


# ---- the table --------------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """A checkpoint of the table: one model for every set, or a leave-one-source-out family (``WORK`` of
    :func:`train_loso`: real source s is scored by ``holdout-s``, the synthetic set by every ``holdout-*``).

    Attributes:
        label: the table's name for it. models: set name (or ``"*"``) -> checkpoint (directory or shipped name).
    """

    label: str
    models: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> "ModelSpec":
        """``NAME`` / ``DIR`` (one checkpoint), ``LABEL=NAME_OR_DIR``, or a LOSO work directory holding
        ``holdout-<source>/`` checkpoints (then its sets are mapped as in the class docs)."""
        label, _, target = spec.rpartition("=")
        label = label or Path(target).name or target
        holdouts = {p.name[len("holdout-"):]: str(p) for p in sorted(Path(target).glob("holdout-*"))
                    if (p / "model.safetensors").is_file()} if Path(target).is_dir() else {}
        if holdouts:
            return cls(label, holdouts)
        return cls(label, {"*": target})

    def rows(self, sets: Sequence[str]) -> list[tuple[str, str, str]]:
        """(row label, set, checkpoint) of every row this spec contributes."""
        if "*" in self.models:
            return [(self.label, s, self.models["*"]) for s in sets]
        out = []
        for s in sets:
            if s in self.models:
                out.append((f"{self.label} (without {s})", s, self.models[s]))
            elif s not in REAL_SOURCES:  # synthetic: every held-out model
                out += [(f"{self.label} (without {h})", s, ck) for h, ck in self.models.items()]
        return out


def predict_rewards(ckpt: str, data) -> np.ndarray:
    """(N, M) predicted rewards of checkpoint ``ckpt`` for every plan of a loaded dataset."""
    from reward_models.evaluate import predict_dataset
    from reward_models.reward_fn import load_model

    return predict_dataset(load_model(None if ckpt == "default" else ckpt), data)["reward"]


STANDING_DISPLACEMENT = 2.0
"""m: a window whose logged expert ends within this distance of its start counts as standing (waiting)."""
STATIONARY_REFERENCE = 5.0
"""m: PDM-Closed progress below NAVSIM's EP threshold: EP is 1 for every plan of the window."""


def scene_groups(data) -> dict[str, np.ndarray]:
    """Subsets of a dataset's scenes for the breakdown rows: name -> (N,) bool. ``ego moving`` / ``ego standing``
    (the expert's 4 s displacement above / at most :data:`STANDING_DISPLACEMENT`), ``PDM progress < 5 m`` (EP = 1
    for every plan, :data:`STATIONARY_REFERENCE`)."""
    disp = np.hypot(data.plans[:, 0, -1, 0], data.plans[:, 0, -1, 1])
    ref = data.labels["reference_progress"][:, 0]
    return {"ego moving": disp > STANDING_DISPLACEMENT, "ego standing": disp <= STANDING_DISPLACEMENT,
            "PDM progress < 5 m": ref < STATIONARY_REFERENCE}


def _row(label: str, name: str, ckpt: str, per: dict[str, np.ndarray], draws: int, pooled: float) -> dict[str, Any]:
    return {"label": label, "set": name, "checkpoint": ckpt, **summarise(per, draws), "pooled_spearman": pooled}


def fidelity_table(specs: Sequence[ModelSpec], sets: dict[str, str], draws: int = 2000,
                   breakdown: bool = False) -> list[dict[str, Any]]:
    """One row per (checkpoint, set) (:meth:`ModelSpec.rows`) plus, per spec, a ``real (pooled)`` row over every
    real window (each scored by its row's model): label, set, checkpoint, :func:`summarise` values, the pooled
    Spearman over all plans of the set, and ``per_scene`` (the :func:`scene_metrics` arrays, for paired
    comparisons). ``breakdown``: after each real row, rows for the :func:`scene_groups` subsets (set
    ``"<set>: <group>"``) that hold at least one window."""
    cache = {name: load_dataset(path) for name, path in sets.items()}
    rows = []
    for spec in specs:
        pooled: dict[str, list] = {k: [] for k in METRICS}
        for label, name, ckpt in spec.rows(list(sets)):
            data = cache[name]
            pred = predict_rewards(ckpt, data)
            per = scene_metrics(pred, data.labels["epdms"])
            rows.append(dict(_row(label, name, ckpt, per, draws, spearman(pred, data.labels["epdms"])), per_scene=per))
            if name not in REAL_SOURCES:
                continue
            for k in METRICS:
                pooled[k].append(per[k])
            for group, sel in (scene_groups(data).items() if breakdown else ()):
                if sel.any():
                    rows.append(_row(label, f"{name}: {group}", ckpt, {k: v[sel] for k, v in per.items()}, draws,
                                     spearman(pred[sel], data.labels["epdms"][sel])))
        if len(pooled["gap"]) > 1:
            per = {k: np.concatenate(v) for k, v in pooled.items()}
            rows.append(dict(_row(spec.label, "real (pooled)", "", per, draws, float("nan")), per_scene=per))
    return rows


def paired_differences(rows: Sequence[dict[str, Any]], draws: int = 2000) -> list[dict[str, Any]]:
    """Per-scene differences (row - the first spec's row of the same set) of every row with ``per_scene``, with a
    percentile bootstrap 95 % interval over scenes: ``{"label", "set", "spearman": (mean, lo, hi), "gap": ...}``."""
    if not rows:
        return []
    base_label = rows[0]["label"].split(" (without")[0]

    def is_base(r: dict[str, Any]) -> bool:
        return r["label"] == base_label or r["label"].startswith(base_label + " (without")

    base = {r["set"]: r["per_scene"] for r in rows if "per_scene" in r and is_base(r)}
    out = []
    for r in rows:
        if "per_scene" not in r or is_base(r) or r["set"] not in base:
            continue
        ref = base[r["set"]]
        if len(ref["gap"]) != len(r["per_scene"]["gap"]):
            continue
        out.append({"label": r["label"], "set": r["set"], "versus": base_label,
                    **{k: bootstrap_ci(r["per_scene"][k] - ref[k], draws) for k in ("spearman", "gap")}})
    return out


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`fidelity_table` as a markdown table (means with [95 % interval])."""
    def cell(v: tuple[float, float, float], pct: bool = False) -> str:
        f = 100.0 if pct else 1.0
        fmt = "{:.0f}" if pct else "{:.3f}"
        return f"{fmt.format(v[0] * f)} [{fmt.format(v[1] * f)}, {fmt.format(v[2] * f)}]" + (" %" if pct else "")

    lines = ["| model | set | scenes | Spearman per scene (mean) | best-of-K gap | expert ranked first | "
             "Spearman pooled |", "|---|---|---:|---|---|---|---:|"]
    for r in rows:
        pooled = "" if np.isnan(r["pooled_spearman"]) else f"{r['pooled_spearman']:.3f}"
        lines.append(f"| {r['label']} | {r['set']} | {r['scenes']} | {cell(r['spearman'])} | {cell(r['gap'])} | "
                     f"{cell(r['expert_first'], pct=True)} | {pooled} |")
    return "\n".join(lines)


def format_differences(diffs: Sequence[dict[str, Any]]) -> str:
    """:func:`paired_differences` as a markdown table (empty string when there are none)."""
    if not diffs:
        return ""
    lines = [f"Paired per-scene differences against `{diffs[0]['versus']}` (same scenes and plans; 95 % bootstrap "
             "intervals over scenes):", "", "| model | set | Δ Spearman per scene | Δ best-of-K gap |", "|---|---|---|---|"]
    for d in diffs:
        sp, gp = d["spearman"], d["gap"]
        lines.append(f"| {d['label']} | {d['set']} | {sp[0]:+.3f} [{sp[1]:+.3f}, {sp[2]:+.3f}] | "
                     f"{gp[0]:+.3f} [{gp[1]:+.3f}, {gp[2]:+.3f}] |")
    return "\n".join(lines)


# ---- leave-one-source-out training ---------------------------------------------------------------------------


@dataclass
class FineTuneConfig(TrainConfig):
    """:class:`~reward_models.train.TrainConfig` with the defaults of ``irlvla rwm loso``: a short run from the
    initial checkpoint at a quarter of the default learning rate, weight averaging on."""

    epochs: int = 10
    """passes over the training scenes"""
    lr: float = 5e-4
    """peak AdamW learning rate (50 warm-up steps, cosine decay to 10 %)"""
    patience: int = 4
    """early stop after this many epochs without a validation improvement"""
    ema: float = 0.998
    """decay of the exponential moving average of the weights that is validated and saved (0: off)"""


@dataclass
class LosoConfig:
    """One ``irlvla rwm loso`` run (each field is the CLI flag of the same name; :func:`train_loso`): for each
    held-out real source, an RWM trained on synthetic scenes and the other sources' real windows."""

    work: str
    """work directory (module docs): stores, datasets and (without --out) the holdout-<source>/ checkpoints"""
    out: str | None = None
    """where the holdout-<source>/ and all/ checkpoints go (default: WORK); other recipes on the same data"""
    data_dir: str | None = None
    """folder with the real samples (default: ../shared/data)"""
    sources: tuple[str, ...] = REAL_SOURCES
    """real sources to use (av2, nuscenes, waymo); those without samples are left out"""
    holdouts: tuple[str, ...] = REAL_SOURCES
    """models to train: a source name trains holdout-<source>/ without that source's windows; 'all' trains all/
    on every source"""
    synthetic_scenes: int = 1200
    """synthetic-train scenes (with policy samples) trained on beside the real windows"""
    synthetic_val_scenes: int = 200
    """synthetic validation scenes (synthetic-train 4200 on)"""
    seeds: int = 4
    """candidate sets per real training window (seeds 1..N: the same windows with other candidates)"""
    max_agents: int | None = 64
    """agent slots of the observations (None: the ObsConfig default, 32)"""
    policy: str | None = "bc_default"
    """policy samples among the training candidates (as the default checkpoint's data)"""
    init: str | None = "default"
    """checkpoint to fine-tune from ('none': a new model)"""
    agent_geometry: Literal["circle", "box"] = "box"
    """distance to the agents in the plan features (ModelConfig.agent_geometry; parameter-free, so a fine-tuned
    model may change it)"""
    agents_future: Literal["none", "logged"] = "none"
    """'logged': observations carry the agents' logged futures and the models place the agents there
    (ModelConfig.agent_forecast 'logged'; a teacher that sees the log, as the scorer does)"""
    extra_repeat: int = 1
    """draws per epoch of every real training scene"""
    workers: int = 1
    """processes building datasets"""
    progress: bool = False
    """progress bars"""
    train: FineTuneConfig = field(default_factory=FineTuneConfig)


def train_loso(cfg: LosoConfig) -> dict[str, str]:
    """Build the data of ``cfg`` (kept when already built) and train every model of ``cfg.holdouts``; returns
    model name -> checkpoint dir. Validation: the synthetic validation scenes and the validation windows (last
    25 %) of the sources trained on, each set counting equally (:func:`reward_models.train.evaluate_sets`).

    Raises:
        ValueError: an unknown source or holdout name, or a holdout that leaves no real source to train on.
    """
    from irlvla_gym.evaluation.real_data import default_data_dir
    from reward_models.model import ModelConfig
    from reward_models.train import train

    init = None if str(cfg.init).lower() in ("", "none") else cfg.init
    forecast = {"agent_forecast": "logged"} if cfg.agents_future == "logged" else {}
    overrides = {"agent_geometry": cfg.agent_geometry, **forecast} if init else None
    model_cfg = None if init else ModelConfig(agent_geometry=cfg.agent_geometry, **forecast)
    sources = _require_sources(cfg.sources, "sources")
    bad = [h for h in cfg.holdouts if h != "all" and h not in sources]
    if bad:
        raise ValueError(f"holdouts: {bad} not among sources {sources} (or 'all')")
    obs_config = {"max_agents": int(cfg.max_agents)} if cfg.max_agents else {}
    if cfg.agents_future != "none":
        obs_config["agents_future"] = cfg.agents_future
    obs_config = obs_config or None
    data_dir = cfg.data_dir or default_data_dir()
    stores = build_real_stores(data_dir, cfg.work, sources, progress=cfg.progress)
    real = real_datasets(stores, cfg.work, seeds=range(1, cfg.seeds + 1), policy=cfg.policy, obs_config=obs_config,
                         workers=cfg.workers, progress=cfg.progress)
    syn_train, syn_val = synthetic_datasets(cfg.work, cfg.synthetic_scenes, cfg.synthetic_val_scenes, cfg.policy,
                                            obs_config, cfg.workers, cfg.progress)
    out = {}
    for holdout in cfg.holdouts:
        used = [s for s in real if s != holdout]
        if not used:
            raise ValueError(f"holdouts: holding out {holdout!r} leaves no real source to train on")
        name = "all" if holdout == "all" else f"holdout-{holdout}"
        ckpt = Path(cfg.out or cfg.work) / name
        print(f"rwm loso: {name}: synthetic + {', '.join(used)}", flush=True)
        train(syn_train, str(ckpt), cfg.train, model_cfg, val_dir=syn_val, progress=cfg.progress,
              extra_data=tuple(p for s in used for p in real[s]["train"]), extra_repeat=cfg.extra_repeat,
              extra_val=tuple(real[s]["val"] for s in used if real[s]["val"]), init=init,
              init_overrides=overrides)
        out[name] = str(ckpt)
    return out


# ---- the side-by-side table -----------------------------------------------------------------------------------


@dataclass
class EvalRealConfig:
    """One ``irlvla rwm eval-real`` run (each field is the CLI flag of the same name; :func:`run_eval_real`)."""

    work: str
    """work directory: evaluation datasets are built (once) under WORK/eval"""
    ckpt: tuple[str, ...] = ("default",)
    """checkpoints side by side: a shipped name or directory, LABEL=CKPT, or a loso work directory (its
    holdout-<source>/ models: each real source scored by the model that never saw it)"""
    data_dir: str | None = None
    """folder with the real samples (default: ../shared/data)"""
    sources: tuple[str, ...] = REAL_SOURCES
    """real sources of the table"""
    synthetic_start: int = SYNTHETIC_EVAL[1]
    """first synthetic-test scene of the synthetic rows"""
    synthetic_scenes: int = SYNTHETIC_EVAL[2]
    """synthetic-test scenes of the synthetic rows (0: no synthetic rows)"""
    windows: int | None = None
    """only the first N windows of each real source (quick checks; default: all)"""
    breakdown: bool = False
    """add rows for subsets of the real windows: ego moving / standing, PDM progress < 5 m (EP = 1 for all plans)"""
    draws: int = 2000
    """bootstrap draws of the 95 % intervals"""
    out: str | None = None
    """write table.md and table.json here"""
    workers: int = 1
    """processes building datasets"""


def _checkpoint_obs_config(ckpt: str) -> dict | None:
    from reward_models.checkpoint import read_json, resolve_checkpoint

    return read_json(resolve_checkpoint(ckpt) / "config.json").get("model", {}).get("obs_config")


def run_eval_real(cfg: EvalRealConfig) -> tuple[str, list[dict[str, Any]]]:
    """The side-by-side fidelity table of ``cfg`` (:func:`fidelity_table`; with several checkpoints also the paired
    differences against the first, :func:`paired_differences`): (markdown, rows). Each checkpoint is evaluated on
    datasets built with its own observation settings (same scenes, plans and labels)."""
    from irlvla_gym.evaluation.real_data import default_data_dir

    sources = _require_sources(cfg.sources, "sources")
    synthetic = (SYNTHETIC_EVAL[0], cfg.synthetic_start, cfg.synthetic_scenes) if cfg.synthetic_scenes else None
    data_dir = cfg.data_dir or default_data_dir()
    rows: list[dict[str, Any]] = []
    for spec in (ModelSpec.parse(c) for c in cfg.ckpt):
        configs = {json.dumps(_checkpoint_obs_config(c), sort_keys=True) for c in spec.models.values()}
        if len(configs) > 1:
            raise ValueError(f"ckpt {spec.label}: its models differ in observation settings ({configs})")
        sets = eval_datasets(data_dir, cfg.work, sources, synthetic, json.loads(configs.pop()), cfg.workers,
                             windows=cfg.windows)
        rows += fidelity_table([spec], sets, cfg.draws, cfg.breakdown)
    diffs = paired_differences(rows, cfg.draws)
    table = format_table(rows) + ("\n\n" + format_differences(diffs) if diffs else "")
    rows = [{k: v for k, v in r.items() if k != "per_scene"} for r in rows]
    if cfg.out:
        from irlvla_gym.utils import atomic_write

        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        with atomic_write(Path(cfg.out) / "table.md", "w") as fh:
            fh.write(table + "\n")
        with atomic_write(Path(cfg.out) / "table.json", "w") as fh:
            json.dump({"rows": rows, "paired": diffs}, fh, indent=1)
    return table, rows


__all__ = ["EvalRealConfig", "FineTuneConfig", "LosoConfig", "METRICS", "ModelSpec", "REAL_SOURCES", "SYNTHETIC_EVAL", "bootstrap_ci",
           "build_real_stores", "eval_datasets", "fidelity_table", "format_differences", "format_table", "obs_suffix",
           "paired_differences", "predict_rewards", "scene_groups",
           "real_datasets", "run_eval_real", "scene_metrics", "split_windows", "summarise", "synthetic_datasets",
           "train_loso"]
