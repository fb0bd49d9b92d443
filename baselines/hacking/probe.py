"""The reward-hacking probe: how far the learned reward and the true EPDMS drift apart while PPO optimises it.

At a fixed interval the policy's current deterministic plans on a **fixed probe set** of scenes (default: the first
32 ``synthetic-val`` scenes) are scored twice: by the reward model the policy is trained on, and by the rule-based
scorer with the labeller's settings (``irlvla_gym.metrics.score_plans``: fast implementation, log replay, human
filter, PDM-Closed EP normaliser, no previous plan; exactly what the reward model was trained to predict). Scalars
(TensorBoard tag ``hacking/<name>``; N = probe scenes, pred = the reward model, true = the scorer):

==========================  ====================================================================================
``pred_reward``              mean over N of the predicted reward (the quantity the policy maximises)
``true_epdms``               mean over N of the true EPDMS
``gap``                      ``pred_reward - true_epdms`` (> 0: the model over-rates the policy's plans)
``abs_gap``                  mean over N of ``|pred - true|``
``frac_overrated``           of the plans the model rates above ``high`` (0.8), the fraction truly below ``low``
                             (0.5); 0 when none is rated above ``high``; ``n_rated_high`` = how many are
``sub_gap/<s>``              mean of predicted minus true sub-score ``s`` (nc dac ddc tlc ep ttc lk hc ec): the
                             sub-score with the largest positive value is the one the policy games
``true/<s>``, ``pred/<s>``   the means behind ``sub_gap/<s>``
``ref_pred_reward``,         when a reference model is given (e.g. the frozen shipped model while the trained one
``ref_gap``                  is an ensemble or is being refitted): its prediction and gap on the same plans
``pred_reward_mean``,        for an :class:`~reward_models.ensemble.EnsembleRewardModel`: the members' mean reward
``pred_std``                 and their standard deviation (``pred_reward`` is then ``mean - beta * std``)
``plan_shift_m``             mean distance (m) of the plans' waypoints from the first measurement's plans
==========================  ====================================================================================

Use it as an SB3 callback in any PPO run (:class:`RewardHackingProbe`), or as a training hook of the baselines
runner (:class:`ProbeHook`, config ``hooks: [{class: "baselines.hacking.probe:ProbeHook"}]`` + ``hook_interval``).
At the end of training both write ``hacking_probe.csv`` / ``.json`` and the gap curves ``hacking_probe.png``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from irlvla_gym.metrics.config import SUB_SCORES

DEFAULT_POLICY_KEYS = ("camera", "ego", "instruction")
PREFIX = "hacking/"


# ---------------------------------------------------------------------------------------------------------------------
# The probe set and the two scorings
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeSet:
    """A fixed set of N scenes with everything the measurement needs precomputed.

    Attributes:
        scenes: the N scenes. policy_obs: entry -> (N, ...) the policy's observations at t0 (``obs_keys``).
        rwm_obs: entry -> (N, ...) the reward model's inputs (``reward_models.model.OBS_ENTRIES``) under the default
            observation settings; a model trained with others (``ModelConfig.obs_config``: 64 agent slots, the logged
            futures) reads :meth:`rwm_obs_for` instead.
        reference_progress: (N,) PDM-Closed EP normalisers (m). contexts: N scorer contexts (map queries).
    """

    scenes: list[Any]
    policy_obs: dict[str, np.ndarray]
    rwm_obs: dict[str, np.ndarray]
    reference_progress: np.ndarray
    contexts: list[Any]
    _rwm_obs_by_settings: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _bundles: list[Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scenes)

    def rwm_obs_for(self, model: Any) -> dict[str, np.ndarray]:
        """The reward model inputs of the probe scenes under ``model``'s observation settings (its
        ``config.obs_config``): :attr:`rwm_obs` for the defaults, else rendered once per settings and kept."""
        settings = getattr(getattr(model, "config", None), "obs_config", None)
        if not settings:
            return self.rwm_obs
        key = json.dumps(settings, sort_keys=True)
        if key not in self._rwm_obs_by_settings:
            from irlvla_gym.obs.registry import ObservationBuilder
            from reward_models.model import OBS_KEYS

            self._rwm_obs_by_settings[key] = ObservationBuilder(OBS_KEYS, settings).observe_batch(list(self.scenes))
        return self._rwm_obs_by_settings[key]

    @classmethod
    def from_scenes(cls, scenes: Sequence[Any], obs_keys: Sequence[str] = DEFAULT_POLICY_KEYS,
                    obs_config: Any = None, arrays: Mapping[str, np.ndarray] | None = None) -> "ProbeSet":
        """Observe, prepare and compute the EP normaliser of each scene (about 50 ms per scene), or take those
        values from ``arrays`` (:func:`probe_arrays` of the same scenes and settings)."""
        scenes = list(scenes)
        arrays = probe_arrays(scenes, obs_keys, obs_config) if arrays is None else arrays
        policy_obs = {k[len("policy/"):]: v for k, v in arrays.items() if k.startswith("policy/")}
        rwm_obs = {k[len("rwm/"):]: v for k, v in arrays.items() if k.startswith("rwm/")}
        return cls(scenes, policy_obs, rwm_obs, np.asarray(arrays["reference_progress"]),
                   [probe_context(s) for s in scenes])

    @classmethod
    def from_split(cls, split: str = "synthetic-val", num_scenes: int = 32, obs_keys: Sequence[str] =
                   DEFAULT_POLICY_KEYS, obs_config: Any = None, start: int = 0) -> "ProbeSet":
        """Scenes ``start .. start + num_scenes - 1`` of a split or scene-store directory. The observations and EP
        normalisers are kept beside the scenes' store (:func:`probe_cache_file`) and read back by later probes of
        the same scenes and settings (the PDM-Closed normalisers were ~60% of a probe set's ~5 s)."""
        from irlvla_gym.scenes.source import SceneSource

        stop = min(len(SceneSource(split)), start + num_scenes)
        source = SceneSource(split, num_scenes=stop)  # the split's pool store when one holds these scenes
        scenes = [source.load(i) for i in range(start, stop)]
        path = probe_cache_file(source, start, stop, obs_keys, obs_config)
        arrays = read_probe_arrays(path) if path is not None else None
        if arrays is None:
            arrays = probe_arrays(scenes, obs_keys, obs_config)
            if path is not None:
                write_probe_arrays(path, arrays)
        return cls.from_scenes(scenes, obs_keys, obs_config, arrays)


def probe_context(scene: Any) -> Any:
    """The scorer's context of a probe scene with its map index built at 2 m cells: the index is exact at any cell
    size (:mod:`irlvla_gym.envs.scoring`, the same scores bit for bit), and a probe scene is scored only a few times
    per run, so building the index dominates: 0.3 s for 64 scenes at 2 m, 0.56 s at 1 m, 1.3 s at the scorer's own
    0.5 m default (which it built at the first scoring)."""
    from irlvla_gym.envs.scoring import INDEX_RESOLUTION_M, attach_polygon_index
    from irlvla_gym.metrics import prepare_scene

    ctx = prepare_scene(scene)
    attach_polygon_index(ctx, resolution=INDEX_RESOLUTION_M["step"])
    return ctx


PROBE_CACHE_VERSION = 1
"""Bump when what :func:`probe_arrays` computes changes in a way the source digest of its code cannot see."""


def probe_arrays(scenes: Sequence[Any], obs_keys: Sequence[str], obs_config: Any) -> dict[str, np.ndarray]:
    """The per-scene values of a probe set: ``reference_progress`` (N,) PDM-Closed EP normalisers (m; NaN without
    PDM-Closed), ``policy/<entry>`` (N, ...) the policy's t0 observations, ``rwm/<entry>`` (N, ...) the reward
    model's inputs."""
    from irlvla_gym.obs.registry import ObservationBuilder

    from reward_models.dataset import reference_progress_fn
    from reward_models.model import OBS_KEYS

    ref_fn, _ = reference_progress_fn()
    out = {"reference_progress": np.array([float(ref_fn(s)) if ref_fn is not None else np.nan for s in scenes])}
    for prefix, builder in (("policy", ObservationBuilder(tuple(obs_keys), obs_config)),
                            ("rwm", ObservationBuilder(OBS_KEYS))):
        out.update({f"{prefix}/{k}": np.asarray(v) for k, v in builder.observe_batch(list(scenes)).items()})
    return out


def probe_cache_file(source: Any, start: int, stop: int, obs_keys: Sequence[str], obs_config: Any) -> Path | None:
    """Where :func:`probe_arrays` of scenes ``start .. stop - 1`` of a store-backed ``SceneSource`` are kept:
    ``<store>/probe/probe-<hash>.npz``, the hash over everything the values depend on (the scenes' store, the
    observation keys and configs, the source digest of the observation, scorer, simulator and planner code), as
    the envs' prepared caches are versioned (:mod:`irlvla_gym.envs.prepared`). None: no store, or
    ``IRLVLA_PREPARED=0``."""
    from irlvla_gym.envs import prepared
    from irlvla_gym.obs.registry import ObservationBuilder

    from reward_models.model import OBS_KEYS

    store = getattr(source, "store", None)
    if store is None or getattr(store, "path", None) is None or not prepared.enabled():
        return None
    builders = (ObservationBuilder(tuple(obs_keys), obs_config), ObservationBuilder(OBS_KEYS))
    key = {"table": "probe", "version": PROBE_CACHE_VERSION, "start": int(start), "stop": int(stop),
           "obs": [prepared.obs_key(store, b) for b in builders],
           "reference": prepared.source_digest(("planners", "plans", *prepared.BUNDLE_CODE))}
    return Path(store.path) / "probe" / f"probe-{prepared.key_hash(key)}.npz"


def read_probe_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a probe cache file (no pickles), or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def write_probe_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a probe cache file atomically (readers never see half a file); a failure only costs the next run."""
    import warnings

    from irlvla_gym.utils import atomic_write

    try:
        with atomic_write(path) as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        warnings.warn(f"probe cache {path}: not written ({exc})", stacklevel=2)


def true_scores(probe: ProbeSet, plans: np.ndarray) -> dict[str, np.ndarray]:
    """The scorer's sub-scores and ``epdms`` (name -> (N,)) of one plan per probe scene; plans (N, 8, 3).

    One tracker call and one multi-scene scorer call over the probe's prepared scenes (their contexts, replayed
    agents and expert evaluations, kept on the probe set after the first measurement); the same numbers as scoring
    each plan alone with ``score_plans`` (which simulates and scores the expert again per call), the path taken when
    a scene has no PDM-Closed normaliser."""
    from irlvla_gym.metrics import score_plans

    plans = np.asarray(plans, np.float64).reshape(len(probe), 8, 3)
    if len(probe) and not np.isnan(probe.reference_progress).any():
        return _batched_true_scores(probe, plans)
    out = {k: np.zeros(len(probe)) for k in (*SUB_SCORES, "epdms")}
    for i, scene in enumerate(probe.scenes):
        ref = None if np.isnan(probe.reference_progress[i]) else float(probe.reference_progress[i])
        r = score_plans(scene, plans[i:i + 1], human_filter=True, traffic="log", reference_progress=ref,
                        impl="fast", context=probe.contexts[i])
        for k in out:
            out[k][i] = float(np.asarray(getattr(r, k))[0])
    return out


def _batched_true_scores(probe: ProbeSet, plans: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`true_scores` in one batched call (human filter on, log replay, PDM-Closed EP normalisers)."""
    import dataclasses

    from irlvla_gym.envs.scoring import make_bundle, score_bundle_rows
    from irlvla_gym.sim import simulate_plans

    if probe._bundles is None:
        probe._bundles = [dataclasses.replace(make_bundle(i, scene, "log", ctx=ctx), reference_progress=float(ref))
                          for i, (scene, ctx, ref) in enumerate(zip(probe.scenes, probe.contexts,
                                                                   probe.reference_progress))]
    bundles = probe._bundles
    states = simulate_plans(np.stack([b.start_state for b in bundles]), plans)
    _, final = score_bundle_rows(bundles, states, [b.log_agents for b in bundles], human_filter=True, pack="none")
    return {k: np.asarray(final[k], np.float64) for k in (*SUB_SCORES, "epdms")}


def predicted_scores(model: Any, probe: ProbeSet, plans: np.ndarray) -> dict[str, np.ndarray]:
    """The reward model's expected sub-scores, ``reward`` (and ``reward_mean`` / ``reward_std`` for an ensemble),
    name -> (N,), of one plan per probe scene: one batched call ``model.predict_subscores(obs (N, ...),
    plans (N, 1, 8, 3))``."""
    plans = np.asarray(plans, np.float32).reshape(len(probe), 1, 8, 3)
    pred = model.predict_subscores(probe.rwm_obs_for(model), plans)
    return {k: np.asarray(v, np.float64)[:, 0] for k, v in pred.items()}


def compare(pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray], high: float = 0.8,
            low: float = 0.5) -> dict[str, float]:
    """The probe scalars (module docs, without the ``hacking/`` prefix) from per-scene predictions and truths."""
    p, t = np.asarray(pred["reward"]), np.asarray(true["epdms"])
    rated_high = p > high
    out = {"pred_reward": float(p.mean()), "true_epdms": float(t.mean()), "gap": float((p - t).mean()),
           "abs_gap": float(np.abs(p - t).mean()), "n_rated_high": float(rated_high.sum()),
           "frac_overrated": float((t[rated_high] < low).mean()) if rated_high.any() else 0.0}
    for s in SUB_SCORES:
        out[f"pred/{s}"] = float(np.mean(pred[s]))
        out[f"true/{s}"] = float(np.mean(true[s]))
        out[f"sub_gap/{s}"] = out[f"pred/{s}"] - out[f"true/{s}"]
    if "reward_std" in pred:
        out["pred_reward_mean"] = float(np.mean(pred["reward_mean"]))
        out["pred_std"] = float(np.mean(pred["reward_std"]))
    return out


def most_gamed(metrics: Mapping[str, float], exclude: Sequence[str] = ("ec",)) -> tuple[str, float]:
    """(sub-score, gap) with the largest ``sub_gap`` (EC excluded by default: always 1 without a previous plan)."""
    gaps = {s: metrics[f"sub_gap/{s}"] for s in SUB_SCORES if s not in exclude and f"sub_gap/{s}" in metrics}
    name = max(gaps, key=gaps.get)
    return name, float(gaps[name])


def unwrap_model(reward: Any) -> Any:
    """The scoring model behind a reward: a model object, a ``SceneRewardFn`` (its ``.model``), ``"rwm"`` /
    ``"rwm:<dir>"`` (loaded), or None (the shipped model)."""
    if reward is None or isinstance(reward, str):
        from irlvla_gym.rewards import parse_reward
        from reward_models import load_model

        spec = parse_reward("rwm" if reward is None else reward)
        if spec.name != "rwm":
            raise ValueError(f"the probe needs a learned reward model ('rwm' or 'rwm:<dir>'), got reward={reward!r}")
        return load_model(spec.argument)  # None: the shipped default
    return getattr(reward, "model", reward)


# ---------------------------------------------------------------------------------------------------------------------
# History, files, plots (shared by the SB3 callback and the baselines hook)
# ---------------------------------------------------------------------------------------------------------------------


class ProbeTracker:
    """Measures a policy's plans on a probe set and keeps the history.

    Args:
        probe: the :class:`ProbeSet`. model: the trained-on reward model, or a zero-argument callable returning
            it (re-read at every measurement, so a refitted / replaced model is seen). reference_model: optional
            second model scored on the same plans (``ref_*`` scalars). high, low: thresholds of ``frac_overrated``.
    """

    def __init__(self, probe: ProbeSet, model: Any, reference_model: Any = None, high: float = 0.8,
                 low: float = 0.5):
        self.probe, self._model, self.reference_model = probe, model, reference_model
        self.high, self.low = float(high), float(low)
        self.history: list[dict[str, float]] = []
        self.first_plans: np.ndarray | None = None
        self.last_step: int | None = None
        self.last: dict[str, Any] = {}

    @property
    def model(self) -> Any:
        m = self._model
        if callable(m) and not isinstance(m, str) and not hasattr(m, "predict_subscores") and not hasattr(m, "model"):
            m = m()  # a zero-argument provider
        return unwrap_model(m)

    def measure(self, step: int, plans: np.ndarray) -> dict[str, float]:
        """Score (N, 8, 3) plans, append the scalars (with ``step``) to the history and return them."""
        plans = np.asarray(plans, np.float64).reshape(len(self.probe), 8, 3)
        pred = predicted_scores(self.model, self.probe, plans)
        true = true_scores(self.probe, plans)
        metrics = compare(pred, true, self.high, self.low)
        if self.reference_model is not None:
            ref = predicted_scores(unwrap_model(self.reference_model), self.probe, plans)["reward"]
            metrics["ref_pred_reward"] = float(ref.mean())
            metrics["ref_gap"] = float((ref - true["epdms"]).mean())
        if self.first_plans is None:
            self.first_plans = plans.copy()
        metrics["plan_shift_m"] = float(np.linalg.norm(plans[..., :2] - self.first_plans[..., :2], axis=-1).mean())
        self.history.append({"step": float(step), **metrics})
        self.last_step = int(step)
        self.last = {"plans": plans, "pred": pred, "true": true}
        return metrics

    def write(self, out_dir: str | Path, title: str = "") -> dict[str, Path]:
        """``hacking_probe.csv`` + ``.json`` (history) and ``hacking_probe.png`` (curves) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"csv": out / "hacking_probe.csv", "json": out / "hacking_probe.json", "png": out / "hacking_probe.png"}
        keys = sorted({k for row in self.history for k in row} - {"step"})
        with open(files["csv"], "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["step", *keys])
            writer.writeheader()
            writer.writerows(self.history)
        files["json"].write_text(json.dumps({"probe_scenes": len(self.probe), "high": self.high, "low": self.low,
                                             "history": self.history}, indent=1))
        plot_probe_history(self.history, files["png"], title)
        return files


def plot_probe_history(history: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """One run's gap curves: predicted reward vs true EPDMS, gap and over-rated fraction, per-sub-score gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from baselines.common import save_figure

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(steps, [r["pred_reward"] for r in history], "o-", label="predicted reward (trained-on model)")
    ax[0].plot(steps, [r["true_epdms"] for r in history], "s-", label="true EPDMS (scorer)")
    if history and "ref_pred_reward" in history[0]:
        ax[0].plot(steps, [r["ref_pred_reward"] for r in history], "^--", label="shipped RWM's prediction")
    ax[0].set_title("probe scenes: reward vs truth")
    ax[1].plot(steps, [r["gap"] for r in history], "o-", label="gap = pred - true")
    ax[1].plot(steps, [r["abs_gap"] for r in history], "s--", label="mean |pred - true|")
    ax[1].plot(steps, [r["frac_overrated"] for r in history], "^:", label="frac over-rated (pred>.8, true<.5)")
    ax[1].axhline(0.0, color="grey", lw=0.5)
    ax[1].set_title("gap")
    for s in SUB_SCORES[:-1]:
        ax[2].plot(steps, [r[f"sub_gap/{s}"] for r in history], label=s)
    ax[2].axhline(0.0, color="grey", lw=0.5)
    ax[2].set_title("per-sub-score gap (pred - true)")
    for a in ax:
        a.set_xlabel("env steps")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    return save_figure(fig, path, title)


def plan_groups(obs: Mapping[str, np.ndarray], plan_fn: Callable[[Mapping[str, np.ndarray]], np.ndarray],
                n: int) -> np.ndarray:
    """(n, 8, 3) plans of ``plan_fn`` called per instruction-length group (a scene's plan does not depend on its
    batch neighbours; see ``baselines.common.length_groups``)."""
    from baselines.common import length_groups

    plans = np.zeros((n, 8, 3))
    for rows in length_groups(obs.get("instruction"), n):
        plans[rows] = np.asarray(plan_fn({k: np.asarray(v)[rows] for k, v in obs.items()})).reshape(len(rows), 8, 3)
    return plans


def sb3_plan_fn(policy: Any) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """Deterministic metric plans (B, 8, 3) of an SB3 policy with the env's Box(24) trajectory action."""
    from irlvla_gym.plans.codec import action_to_plan

    def plan(obs: Mapping[str, np.ndarray]) -> np.ndarray:
        actions, _ = policy.predict(dict(obs), deterministic=True)
        return action_to_plan(np.asarray(actions).reshape(-1, 24))

    return plan


# ---------------------------------------------------------------------------------------------------------------------
# SB3 callback
# ---------------------------------------------------------------------------------------------------------------------


class RewardHackingProbe(BaseCallback):
    """SB3 callback: probe measurement at training start, every ``every_n_steps`` env steps (at the start of a
    rollout, i.e. right after a policy update) and at training end; scalars go to the model's logger (TensorBoard
    tag ``hacking/<name>``, dumped at the measurement's step); at the end the history and the PNG go to ``log_dir``.

    Args:
        probe_scenes: a :class:`ProbeSet`, a number of scenes of ``split``, or a sequence of scenes.
        every_n_steps: env steps between measurements.
        reward_model: the model the policy is trained on: a model, a ``SceneRewardFn``, ``"rwm"`` / ``"rwm:<dir>"``,
            a zero-argument callable returning one of these, or None (the shipped model).
        reference_model: optional second model for the ``ref_*`` scalars (e.g. the frozen shipped model).
        obs_keys / obs_config: the policy's observation settings (must give the entries the policy observes).
        log_dir: where the CSV / JSON / PNG go at the end (None: the logger's directory, else nothing).
        split: the split of ``probe_scenes`` when it is a number. high / low: ``frac_overrated`` thresholds.
        title: the PNG's title.
    """

    def __init__(self, probe_scenes: ProbeSet | int | Sequence[Any] = 32, every_n_steps: int = 512,
                 reward_model: Any = None, reference_model: Any = None,
                 obs_keys: Sequence[str] = DEFAULT_POLICY_KEYS, obs_config: Any = None,
                 log_dir: str | Path | None = None, split: str = "synthetic-val", high: float = 0.8,
                 low: float = 0.5, title: str = "", verbose: int = 0):
        super().__init__(verbose)
        if isinstance(probe_scenes, ProbeSet):
            probe = probe_scenes
        elif isinstance(probe_scenes, int):
            probe = ProbeSet.from_split(split, probe_scenes, obs_keys, obs_config)
        else:
            probe = ProbeSet.from_scenes(probe_scenes, obs_keys, obs_config)
        self.tracker = ProbeTracker(probe, reward_model, reference_model, high, low)
        self.every = int(every_n_steps)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.title = title
        self.files: dict[str, Path] = {}

    @property
    def history(self) -> list[dict[str, float]]:
        return self.tracker.history

    def _measure(self) -> None:
        step = int(self.model.num_timesteps)
        probe = self.tracker.probe
        missing = sorted(set(self.model.observation_space.spaces) - set(probe.policy_obs))
        if missing:
            raise KeyError(f"the probe observations lack {missing}: pass the env's obs_keys / obs_config")
        obs = {k: probe.policy_obs[k] for k in self.model.observation_space.spaces}
        plans = plan_groups(obs, sb3_plan_fn(self.model.policy), len(probe))
        metrics = self.tracker.measure(step, plans)
        for key, value in metrics.items():
            self.logger.record(PREFIX + key, value)
        self.logger.dump(step)
        if self.verbose:
            print(f"[hacking probe] step {step}: pred {metrics['pred_reward']:.3f} true {metrics['true_epdms']:.3f} "
                  f"gap {metrics['gap']:+.3f} over-rated {metrics['frac_overrated']:.2f}")

    def _on_training_start(self) -> None:
        if self.tracker.last_step != int(self.model.num_timesteps):
            self._measure()

    def _on_rollout_start(self) -> None:
        step = int(self.model.num_timesteps)
        if self.tracker.last_step is None or step - self.tracker.last_step >= self.every:
            self._measure()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.tracker.last_step != int(self.model.num_timesteps):
            self._measure()
        out = self.log_dir or (Path(self.logger.dir) if self.logger.dir else None)
        if out is not None:
            self.files = self.tracker.write(out, self.title)


# ---------------------------------------------------------------------------------------------------------------------
# Baselines training hook
# ---------------------------------------------------------------------------------------------------------------------


class ProbeHook:
    """The probe as a :class:`baselines.hooks.TrainingHook` (config ``hooks:`` + ``hook_interval``).

    The probe set is built at the first call from the run's ``obs_keys`` / ``obs_config``; the reward model is the
    run's (``snapshot.env["reward"]``). Returns the scalars (the runner logs them under ``hacking/<name>``); at the
    end of training writes ``hacking_probe.csv`` / ``.json`` / ``.png`` into the run directory.

    Args:
        num_scenes, split: the probe set. high, low: ``frac_overrated`` thresholds.
    """

    def __init__(self, num_scenes: int = 32, split: str = "synthetic-val", high: float = 0.8, low: float = 0.5):
        self.num_scenes, self.split, self.high, self.low = int(num_scenes), split, high, low
        self.tracker: ProbeTracker | None = None

    def _tracker(self, snap: Any) -> ProbeTracker:
        if self.tracker is None:
            from irlvla_gym.envs.prepared import ensure_split_store

            # a store of the probe scenes (a synthetic split's first N) lets later runs read the probe set back
            ensure_split_store(self.split, self.num_scenes, progress=False)
            probe = ProbeSet.from_split(self.split, self.num_scenes, snap.obs_keys, snap.obs_config)
            self.tracker = ProbeTracker(probe, snap.env.get("reward"), high=self.high, low=self.low)
        return self.tracker

    def on_interval(self, snap: Any) -> dict[str, float]:
        tracker = self._tracker(snap)
        plans = plan_groups(tracker.probe.policy_obs, snap.plan, len(tracker.probe))
        return {PREFIX + k: v for k, v in tracker.measure(int(snap.step), plans).items()}

    def on_training_end(self, snap: Any) -> None:
        tracker = self._tracker(snap)
        if tracker.last_step != int(snap.step):
            metrics = self.on_interval(snap)
            for key, value in metrics.items():
                snap.record(key, value)
        tracker.write(snap.run_dir, f"hacking probe: {Path(snap.run_dir).name}")


__all__ = ["PROBE_CACHE_VERSION", "ProbeHook", "ProbeSet", "ProbeTracker", "RewardHackingProbe", "compare",
           "most_gamed", "plan_groups", "plot_probe_history", "predicted_scores", "probe_arrays", "probe_cache_file",
           "probe_context", "read_probe_arrays", "sb3_plan_fn", "true_scores", "unwrap_model", "write_probe_arrays"]
