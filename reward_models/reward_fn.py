"""The RWM as a reward: for the IRL-VLA envs (``reward="rwm"``) and for reward-wrapping tools of other libraries.

* :func:`load_model` / :func:`load_default`: the shipped checkpoint (``reward_models/checkpoints/default``), another
  shipped checkpoint by name (``"policy_aware"``) or a checkpoint directory, cached per path.
* :class:`SceneRewardFn`: ``(scene, plan (8, 3)) -> float``, the callable the envs use for ``reward="rwm"`` or
  ``reward="rwm:<name or /path/to/ckpt>"``. It builds the model's observation of the scene (``irlvla_gym.obs``:
  bev, ego, instruction, agents, map at the scene origin and t0; the closed-loop env hands in the scene as seen from the
  current ego state, so that is the current observation) and caches the scene encoding, so repeated plans in the
  same scene (vocabulary search, several env steps) cost only the plan scoring. Its :meth:`SceneRewardFn.score_batch`
  ``(scenes, plans (M, 8, 3)) -> (M,)`` is the env's batched seam (``irlvla_gym.envs.core.CallableReward``: one call
  per env step for all valid rows, the single env included): the scenes not cached yet are rendered and encoded in
  one batch, then all M rows are scored in ONE ``model.score`` call (:func:`pack_rows` lays the rows out as a
  (slots, K) plan grid over the distinct scenes; :meth:`~reward_models.model.SceneEncoding.concat` pads the
  encodings' tokens), equal to M ``fn(scene, plan)`` calls up to float32 rounding.
* :class:`RWMRewardFn`: ``(obs, acts, next_obs, dones) -> (N,) np.ndarray``, the signature of reward functions in
  ``imitation`` (``RewardVecEnvWrapper``) and similar tools. It needs no scene: the model's inputs are a subset of
  the env's observation, so make the env with ``obs_keys=RWMRewardFn.OBS_KEYS`` (bev, ego, instruction, agents,
  map) or a superset. The reward of an action is computed from ``obs`` (the observation the action was chosen in;
  in the plan-once env ``next_obs`` already belongs to the next scene after the auto-reset). Actions are decoded
  like the env's action type: ``"trajectory"`` (Box(24) in [-1, 1], ``irlvla_gym.plans.codec.action_to_plan``)
  or ``"vocabulary"`` (index into the K-entry vocabulary). Non-finite actions get reward 0, as in the envs.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from irlvla_gym.cache import LRU
from reward_models.checkpoint import SHIPPED_DIR, resolve_checkpoint
from reward_models.dataset import obs_entries
from reward_models.model import OBS_ENTRIES, OBS_KEYS, RewardWorldModel

DEFAULT_CHECKPOINT = SHIPPED_DIR / "default"


class NonFiniteRewardError(FloatingPointError):
    """The reward model produced NaN or inf rewards (a damaged model or out-of-range inputs); the message says where."""


def finite_rewards(rewards: np.ndarray, where: str) -> np.ndarray:
    """``rewards`` unchanged when every entry is finite; else :class:`NonFiniteRewardError` naming ``where`` and the
    bad entries, because a NaN reward silently poisons PPO's advantages and every table built from it."""
    bad = ~np.isfinite(rewards)
    if bad.any():
        raise NonFiniteRewardError(f"{where}: the reward model produced {int(bad.sum())} non-finite reward(s) of "
                                   f"{rewards.size} (first at row {int(np.flatnonzero(bad.ravel())[0])})")
    return rewards


@functools.lru_cache(maxsize=8)
def _cached_model(path: str) -> RewardWorldModel:
    return RewardWorldModel.from_pretrained(path)


def load_model(path: str | Path | None = None) -> RewardWorldModel:
    """A model from a checkpoint directory or the name of a shipped checkpoint (``"default"``, ``"policy_aware"``;
    :func:`reward_models.checkpoint.resolve_checkpoint`; None = the shipped default); cached per path, in eval mode."""
    return _cached_model(str(resolve_checkpoint(path)))


def load_default() -> RewardWorldModel:
    """The shipped default checkpoint (``reward_models/checkpoints/default``)."""
    return load_model(None)


class SceneRewardFn:
    """``(scene, plan) -> float`` reward for the envs (module docs).

    Args:
        checkpoint: checkpoint directory or shipped name ("policy_aware"); None = the shipped default.
        cache_size: scene encodings kept (LRU), keyed by scene token and ego state.
    """

    def __init__(self, checkpoint: str | Path | None = None, cache_size: int = 64):
        self._attach(load_model(checkpoint), cache_size)

    def _attach(self, model, cache_size: int) -> None:
        """Score with ``model`` (eval mode), an empty encoding cache of ``cache_size`` scenes."""
        from irlvla_gym.obs.registry import ObservationBuilder

        self.model = model.eval()
        # the observation settings the model was trained with (ModelConfig.obs_config; None: the defaults)
        self.builder = ObservationBuilder(OBS_KEYS, getattr(getattr(model, "config", None), "obs_config", None))
        self._cache: LRU[Any] = LRU(cache_size)
        self._template = None  # a cached encoding with the largest token / slot counts cached so far

    def _key(self, scene) -> str:
        e = scene.ego
        h = hashlib.blake2b(digest_size=8)
        for a in (e.history, e.history_velocity, e.history_acceleration):
            h.update(np.ascontiguousarray(a, np.float64).tobytes())
        return f"{scene.token}:{h.hexdigest()}"

    @torch.no_grad()
    def encode(self, scene):
        return self._cache.get(self._key(scene), lambda: self.model.encode_scene(self.builder.observe(scene)))

    @property
    def observation_spec(self) -> tuple[tuple[str, ...], Any]:
        """(obs keys, obs config) of the scene observation the model reads: the envs hand in these observations at
        t0, cached and persisted with the scene (``irlvla_gym.envs.core.CallableReward``), instead of this reward
        rendering them per episode."""
        return tuple(self.builder.keys), self.builder.config

    @property
    def cache_size(self) -> int:
        """Scene encodings kept (LRU)."""
        return self._cache.size

    def clear_cache(self) -> None:
        """Drop the cached scene encodings (call it after changing the model's weights)."""
        self._cache.clear()
        self._template = None

    @torch.no_grad()
    def score(self, scene, plans: np.ndarray) -> np.ndarray:
        """Rewards (K,) of plans (K, 8, 3) in ``scene``."""
        plans = np.asarray(plans, np.float32).reshape(-1, 8, 3)
        reward = self.model.score(self.encode(scene), plans).reward[0].numpy().astype(np.float64)
        return finite_rewards(reward, f"SceneRewardFn.score (scene {getattr(scene, 'token', '?')})")

    def __call__(self, scene, plan: np.ndarray) -> float:
        return float(self.score(scene, plan)[0])

    @torch.no_grad()
    def score_batch(self, scenes: Sequence, plans: np.ndarray,
                    observations: Sequence[Mapping[str, np.ndarray]] | None = None) -> np.ndarray:
        """Rewards (M,) float64 of M rows: plan ``plans[i]`` ((8, 3) x, y, yaw in the ego frame of ``scenes[i]``,
        m / rad) in ``scenes[i]``; scenes may repeat. The env's batched reward (module docs): one batched encoding
        of the scenes not cached yet, then one forward pass for all rows, no per-row Python in the scoring.
        ``observations``: row ``i``'s observation of ``scenes[i]`` (:attr:`observation_spec`), used instead of
        rendering it."""
        plans = np.asarray(plans, np.float32).reshape(-1, 8, 3)
        if len(scenes) != len(plans):
            raise ValueError(f"score_batch: {len(scenes)} scenes for {len(plans)} plans")
        if observations is not None and len(observations) != len(plans):
            raise ValueError(f"score_batch: {len(observations)} observations for {len(plans)} plans")
        if not len(plans):
            return np.zeros(0)
        index: dict[str, int] = {}  # cache key -> distinct scene, in order of first appearance
        scene_of_row = np.array([index.setdefault(self._key(s), len(index)) for s in scenes], np.int64)
        first_row = np.empty(len(index), np.int64)
        first_row[scene_of_row[::-1]] = np.arange(len(plans))[::-1]
        layout = pack_rows(scene_of_row, len(index))
        rows_obs = None if observations is None else [observations[i] for i in first_row]
        enc = self._slot_encoding([scenes[i] for i in first_row], list(index), layout.slot_scene, rows_obs)
        reward = self.model.score(enc, layout.grid(plans)).reward.cpu()  # (slots, K)
        rows = torch.from_numpy(layout.row_slot), torch.from_numpy(layout.row_col)
        out = reward[rows].numpy().astype(np.float64)
        return finite_rewards(out, f"SceneRewardFn.score_batch ({len(index)} scenes)")

    @torch.no_grad()
    def encode_batch(self, scenes: Sequence, observations: Sequence[Mapping[str, np.ndarray]] | None = None):
        """The model's encoding of B scenes in one call: one batched observation render
        (``ObservationBuilder.observe_batch``; ``observations``: the B scenes' observations, stacked instead) and
        one ``encode_scene``. On the CPU the plan features read the raw uint8 BEV (B, 8, H, W) even for small
        batches (4x less to copy when encodings are concatenated; the same values as the float copy up to float32
        rounding)."""
        if observations is not None:
            obs = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
        elif len(scenes) == 1:
            obs = {k: v[None] for k, v in self.builder.observe(scenes[0]).items()}
        else:
            obs = self.builder.observe_batch(list(scenes))
        enc = self.model.encode_scene(obs)
        bev = obs["bev"]
        if bev.dtype == np.uint8 and next(self.model.parameters()).device.type == "cpu":
            enc = enc.with_obs(bev=torch.from_numpy(np.ascontiguousarray(bev)))
        return enc

    def _slot_encoding(self, scenes: Sequence, keys: Sequence[str], slot_scene: np.ndarray,
                       observations: Sequence[Mapping[str, np.ndarray]] | None = None):
        """The encoding of the slots of a :class:`RowLayout` (slot s shows distinct scene ``slot_scene[s]``).

        Cached scenes come from the LRU; the others are encoded in one :meth:`encode_batch` call and cached as
        per-scene copies (the batch's memory is freed after the step), padded to the largest token / slot counts
        cached so far (so that cached encodings concatenate with one copy per tensor, not one per shape). When
        every scene is new and has one slot, the fresh batch is the result as it is, and only the rows the LRU
        keeps are copied."""
        cache = self._cache
        new = [j for j, k in enumerate(keys) if k not in cache]
        known = set(new)
        encs = {j: cache.get(k, _never) for j, k in enumerate(keys) if j not in known}  # hits: most recently used
        new_obs = None if observations is None else [observations[j] for j in new]
        fresh = self.encode_batch([scenes[j] for j in new], new_obs) if new else None
        whole = len(new) == len(keys) and len(slot_scene) == len(keys)
        skip = max(0, len(new) - cache.size) if whole else 0  # the LRU would evict those again at once
        if skip < len(new):
            part = fresh if skip == 0 else fresh.select(np.arange(skip, len(new)))
            if self._template is not None:
                part = part.pad_to(self._template)
            for r, j in enumerate(new[skip:]):
                encs[j] = part.select([r])
                cache.get(keys[j], functools.partial(_same, encs[j]))
            self._template = encs[new[-1]]
        if whole:
            return fresh
        slots = [encs[j] for j in slot_scene.tolist()]
        return type(slots[0]).concat(slots)


SLOT_COST = 4.0
"""Cost of one slot of the scoring batch (copying a scene's cached encoding into it: uint8 raster, map lookup,
tokens) in units of the cost of scoring one plan (plan features + network): :func:`pack_rows` trades slots against
padded plans with it. Measured on one CPU core, 256 rows over 64 cached scenes of the shipped model: 8.8 ms per
``score_batch`` at 4 (~87 slots of 4 plans), 8.1 ms at 8, 9.3 ms with one slot per scene, 33 ms with one per row."""


@dataclass
class RowLayout:
    """Where M (scene, plan) rows go in the (S, K) plan grid of one ``model.score`` call.

    Attributes:
        slot_scene: (S,) int64 the distinct scene each slot shows (sorted; a scene with more than K rows has
            several slots).
        row_slot, row_col: (M,) int64 slot and column of each row.
        width: K, plans per slot (cells without a row repeat the slot's first plan; their scores are dropped).
    """

    slot_scene: np.ndarray
    row_slot: np.ndarray
    row_col: np.ndarray
    width: int

    def grid(self, plans: np.ndarray) -> np.ndarray:
        """(S, K, 8, 3) float32 plan grid of the rows' plans (M, 8, 3)."""
        lead = np.empty(len(self.slot_scene), np.int64)
        starts = np.flatnonzero(self.row_col == 0)
        lead[self.row_slot[starts]] = starts  # every slot's column 0 holds a row
        out = np.repeat(np.asarray(plans, np.float32)[lead][:, None], self.width, axis=1)
        out[self.row_slot, self.row_col] = plans
        return out


def pack_rows(scene_of_row: np.ndarray, num_scenes: int, slot_cost: float = SLOT_COST) -> RowLayout:
    """The layout of M rows over ``num_scenes`` distinct scenes (``scene_of_row`` (M,) int in [0, num_scenes), every
    scene used) for one forward pass: K plans per slot and ceil(count / K) slots per scene, K minimising
    ``slots x (slot_cost + K)`` (K = 1: one slot per row, each with a copy of its scene's encoding; K = the
    largest count: one slot per scene, short scenes padded with repeated plans). Rows keep their order within a
    scene."""
    scene_of_row = np.asarray(scene_of_row, np.int64)
    counts = np.bincount(scene_of_row, minlength=num_scenes)
    widths = np.arange(1, counts.max() + 1)
    slots = (-(-counts[None, :] // widths[:, None])).sum(1)  # (K_max,) slots needed at each width
    width = int(widths[np.argmin(slots * (slot_cost + widths))])
    order = np.argsort(scene_of_row, kind="stable")
    rank = np.empty(len(scene_of_row), np.int64)  # position of each row among its scene's rows
    rank[order] = np.arange(len(order)) - (np.cumsum(counts) - counts)[scene_of_row[order]]
    per_scene = -(-counts // width)
    row_slot = (np.cumsum(per_scene) - per_scene)[scene_of_row] + rank // width
    return RowLayout(np.repeat(np.arange(num_scenes), per_scene), row_slot, rank % width, width)


def _never():
    raise AssertionError("a cached scene encoding disappeared")


def _same(value):
    return value


def make_env_reward(argument: str | None = None, *, cache_size: int = 64) -> SceneRewardFn:
    """The env reward ``"rwm"`` (``argument`` None: the shipped default) or ``"rwm:<argument>"`` (a shipped name such as
    ``"policy_aware"``, or a checkpoint directory). Registered as the ``rwm`` entry point of ``irlvla_gym.rewards``,
    which is how the envs find it without importing this package."""
    if argument is None and not (DEFAULT_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(f"reward='rwm' needs the shipped reward world model at {DEFAULT_CHECKPOINT}; train it "
                                "(irlvla rwm train) or pass reward=rwm:<checkpoint dir> (--set reward=rwm:DIR)")
    return SceneRewardFn(argument, cache_size=cache_size)


def env_reward(spec: str) -> SceneRewardFn:
    """The env reward of a spec string ``"rwm"`` or ``"rwm:<shipped name or checkpoint dir>"``."""
    from irlvla_gym.rewards import parse_reward

    parsed = parse_reward(spec)
    if parsed.name != "rwm":
        raise ValueError(f"reward must be 'rwm' or 'rwm:<shipped name or checkpoint dir>', got {spec!r}")
    return make_env_reward(parsed.argument)


class RWMRewardFn:
    """Batched reward function ``(obs, acts, next_obs, dones) -> (N,) float32`` (module docs).

    Args:
        checkpoint: checkpoint directory or shipped name ("policy_aware"); None = the shipped default.
        action_type: ``"trajectory"`` or ``"vocabulary"`` (the env's ``action_type``).
        vocabulary_size: K of the vocabulary for ``action_type="vocabulary"``.
    """

    OBS_KEYS = OBS_KEYS
    """Observation keys the env must provide (``gym.make(..., obs_keys=RWMRewardFn.OBS_KEYS)``)."""

    def __init__(self, checkpoint: str | Path | None = None, action_type: str = "trajectory",
                 vocabulary_size: int = 256):
        from irlvla_gym.plans.codec import make_action_type

        self.model = load_model(checkpoint)
        self.actions = make_action_type(action_type, vocabulary_size)

    def plans(self, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 8, 3) plans and (N,) validity of a batch of actions."""
        acts = np.asarray(acts)
        n = len(acts)
        plans = np.zeros((n, 8, 3))
        valid = np.ones(n, bool)
        for i in range(n):
            d = self.actions.decode(acts[i])
            valid[i] = not d.invalid
            if valid[i]:
                plans[i] = d.plan
        return plans, valid

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, np.ndarray], acts: np.ndarray, next_obs: Any = None,
                 dones: Any = None) -> np.ndarray:
        missing = [k for k in OBS_ENTRIES if k not in obs]
        if missing:
            raise KeyError(f"RWMRewardFn needs observation entries {list(OBS_ENTRIES)}; missing {missing}. Make the "
                           f"env with obs_keys={list(OBS_KEYS)} (or a superset)")
        plans, valid = self.plans(acts)
        batch = {k: np.asarray(obs[k]) for k in obs_entries(obs)}
        reward = self.model.predict_reward(batch, plans[:, None].astype(np.float32))[:, 0]
        return finite_rewards(np.where(valid, reward, 0.0).astype(np.float32), "RWMRewardFn")


__all__ = ["DEFAULT_CHECKPOINT", "RowLayout", "SLOT_COST", "load_model", "load_default", "pack_rows",
           "SceneRewardFn", "RWMRewardFn", "NonFiniteRewardError", "env_reward", "finite_rewards",
           "make_env_reward"]
