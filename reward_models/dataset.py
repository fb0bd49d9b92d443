"""The RWM dataset: per scene, K candidate plans labelled with the full EPDMS sub-score vector, plus the expert.

``irlvla rwm dataset --split synthetic-train --out DIR`` (:class:`DatasetConfig`, :func:`run_dataset`, which calls
:func:`build_dataset`).

Candidates (:class:`CandidateConfig`, one :class:`PlanSampler` per source, all drawing from a per-scene generator
``np.random.default_rng([seed, scene_index])`` so the dataset is identical for any worker count or backend):

* ``vocab_near``: the trajectory-vocabulary entries (``irlvla_gym.plans.vocabulary``, K = 256) nearest to the expert
  plan (hard negatives and near-positives);
* ``vocab_random``: vocabulary entries drawn uniformly without replacement;
* ``policy``: samples of a policy (``--policy``: a VLA checkpoint such as ``bc_default``, or a callable; see
  :func:`load_policy_sampler` and :class:`VLAPlanSampler`), only when one is given; otherwise these slots are
  filled by perturbations;
* ``perturb``: the expert plan with longitudinal speed scaling, a constant speed offset, a lateral offset ramped in
  over the horizon and a heading rotation, at magnitudes drawn from {0.25, 0.5, 1, 2, 3} x the configured sigmas.

Labels: :func:`irlvla_gym.metrics.score_plans` (fast implementation, log-replay traffic, NAVSIM v2 human filter,
no previous plan so EC = 1 and EPDMS uses /14) on the K candidates and the expert in one call. **EP normaliser**:
``irlvla_gym.planners.pdm_reference_progress(scene)`` (PDM-Closed's progress x its multiplicative product, as in
NAVSIM) when that function exists; otherwise ``None``, i.e. the best of the batch {candidates, expert}. The manifest
records which (``ep_normaliser``).

Layout of ``DIR``::

    manifest.json                      format version, split, seed, candidate config, shard list (+ blake2b hashes)
    shards/shard-00000.parquet         one row per plan (expert first, then the K candidates) of the shard's scenes:
                                       scene (int32), token, slot (int16; 0 = expert), source (int8, SOURCES),
                                       plan (24 float64: 8 x [x, y, yaw]), nc dac ddc tlc ep ttc lk hc ec epdms pdms
                                       progress reference_progress (float64)
    shards/shard-00000.obs.npz         the model inputs of the shard's scenes (obs-builder entries bev, ego,
                                       instruction, agents, agents_mask, map, map_mask; bev is sparse uint8 and
                                       compresses ~20x), ``scene`` indices; no pickle (``allow_pickle=False``)

Shards are written atomically (temporary file + rename) and listed in the manifest only when complete, so an
interrupted run resumes where it stopped (rerun the same command). Backends: ``local`` (multiprocessing, spawn, one
torch/BLAS thread per worker; ``--workers 1`` runs in-process) or ``ray`` (optional extra; each shard is a remote
task; results are written by the driver, so no shared filesystem is needed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Protocol, Sequence

import numpy as np

from irlvla_gym.configs import count_or_all, option
from irlvla_gym.metrics.config import SUB_SCORES

FORMAT_VERSION = 1
SOURCES = ("expert", "vocab_near", "vocab_random", "perturb", "policy")
LABELS = (*SUB_SCORES, "epdms", "pdms", "progress", "reference_progress")
OBS_KEYS = ("bev", "ego", "instruction", "agents", "map")
"""Observation keys (``irlvla_gym.obs`` registry) the reward model consumes; entries bev, ego, instruction, agents,
agents_mask, map, map_mask."""
OBS_ENTRIES = ("bev", "ego", "instruction", "agents", "agents_mask", "map", "map_mask")
OPTIONAL_ENTRIES = ("agents_future",)
"""Entries a model's observation settings may add (``ObsConfig.agents_future = "logged"``): carried wherever the
observations go when present."""


def obs_entries(names: Iterable[str]) -> tuple[str, ...]:
    """The model-input entries of an observation with entry names ``names``: :data:`OBS_ENTRIES` and the
    :data:`OPTIONAL_ENTRIES` among ``names``."""
    names = set(names)
    return OBS_ENTRIES + tuple(k for k in OPTIONAL_ENTRIES if k in names)


class DatasetError(ValueError):
    """A dataset directory that does not match the request or is damaged."""


# ---- candidate samplers ---------------------------------------------------------------------------------------


class PlanSampler(Protocol):
    """A source of candidate plans.

    ``sample(scene, obs, num, rng)`` returns (num, 8, 3) float64 plans (x, y, yaw at t = 0.5 .. 4 s in the t0 ego
    frame); ``obs`` is the scene's observation dict (:data:`OBS_ENTRIES`); all randomness must come from ``rng``.
    """

    name: str

    def sample(self, scene, obs: dict[str, np.ndarray], num: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass
class CandidateConfig:
    """How the K candidates of a scene are made (module docs).

    Attributes:
        num_candidates: K (the expert is stored in addition).
        vocab_near / vocab_random / policy: counts per source; perturbations fill the rest (and the policy slots when
            no policy is given).
        lateral_sigma: m of lateral offset at 4 s. speed_scale_sigma: log-normal sigma of the speed scale.
        speed_offset_sigma: m/s. heading_sigma: rad of whole-plan rotation. All scaled by a magnitude in
            ``magnitudes`` drawn per candidate.
        policy_exploration: how a VLA checkpoint's samples are drawn around its plan: ``"smooth"`` (the smooth
            directions of :mod:`irlvla_gym.plans.exploration` at a magnitude in ``magnitudes`` x their default std:
            the distribution ``VLAPolicy(exploration="smooth")`` explores with in PPO) or ``"diagonal"`` (the Gaussian
            head's independent per-number std, the distribution of SB3's default).
    """

    num_candidates: int = 64
    vocab_near: int = 12
    vocab_random: int = 12
    policy: int = 8
    lateral_sigma: float = 1.0
    speed_scale_sigma: float = 0.15
    speed_offset_sigma: float = 1.0
    heading_sigma: float = 0.06
    magnitudes: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0)
    policy_exploration: str = "smooth"

    def __post_init__(self) -> None:
        if self.policy_exploration not in ("smooth", "diagonal"):
            raise ValueError(f"policy_exploration {self.policy_exploration!r}: choose 'smooth' or 'diagonal'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CandidateConfig":
        v = dict(values)
        if "magnitudes" in v:
            v["magnitudes"] = tuple(v["magnitudes"])
        return cls(**v)


class VocabularySampler:
    """Vocabulary entries: the ``near`` nearest to the expert (yaw weighted like the k-means) then ``random``."""

    name = "vocabulary"

    def __init__(self, vocabulary: np.ndarray | None = None):
        if vocabulary is None:
            from irlvla_gym.plans.vocabulary import load_vocabulary

            vocabulary = load_vocabulary(256)
        self.vocabulary = np.asarray(vocabulary, np.float64)

    def nearest(self, expert: np.ndarray, num: int) -> np.ndarray:
        from irlvla_gym.plans.vocabulary import YAW_WEIGHT

        w = np.array([1.0, 1.0, YAW_WEIGHT])
        d = (((self.vocabulary - expert[None]) * w) ** 2).sum(axis=(1, 2))
        return np.argsort(d, kind="stable")[:num]

    def sample(self, scene, obs, num: int, rng: np.random.Generator, exclude: np.ndarray | None = None) -> np.ndarray:
        pool = np.setdiff1d(np.arange(len(self.vocabulary)), exclude if exclude is not None else [])
        return self.vocabulary[rng.choice(pool, size=min(num, len(pool)), replace=False)]


class PerturbationSampler:
    """Perturbations of the expert plan (module docs; :class:`CandidateConfig` sigmas)."""

    name = "perturb"

    def __init__(self, config: CandidateConfig):
        self.config = config

    def sample(self, scene, obs, num: int, rng: np.random.Generator) -> np.ndarray:
        return perturb_plans(np.asarray(scene.ego.future, np.float64), num, rng, self.config)


def perturb_plans(expert: np.ndarray, num: int, rng: np.random.Generator, cfg: CandidateConfig) -> np.ndarray:
    """(num, 8, 3) perturbations of an (8, 3) expert plan: arc length s(t) -> scale * s(t) + dv * t along the
    expert path (extended straight past its end), plus a lateral offset L * smoothstep(t / 4) along the path normal,
    then the whole plan rotated about the origin by a heading offset."""
    t = np.arange(1, 9) * 0.5
    pts = np.concatenate([np.zeros((1, 3)), expert])
    seg = np.linalg.norm(np.diff(pts[:, :2], axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    mag = rng.choice(np.asarray(cfg.magnitudes), size=num)
    scale = np.exp(rng.normal(0.0, cfg.speed_scale_sigma, num) * mag)
    dv = rng.normal(0.0, cfg.speed_offset_sigma, num) * mag
    lat = rng.normal(0.0, cfg.lateral_sigma, num) * mag
    rot = rng.normal(0.0, cfg.heading_sigma, num) * mag
    s = np.maximum.accumulate(np.maximum(scale[:, None] * cum[None, 1:] + dv[:, None] * t[None], 0.0), axis=1)
    if cum[-1] < 0.1:  # (nearly) standing expert: move along its heading
        yaw0 = float(expert[-1, 2])
        x, y = s * np.cos(yaw0), s * np.sin(yaw0)
        yaw = np.full_like(s, yaw0)
    else:
        sc = np.minimum(s, cum[-1])
        x, y = np.interp(sc, cum, pts[:, 0]), np.interp(sc, cum, pts[:, 1])
        yaw_path = np.unwrap(np.concatenate([[0.0], expert[:, 2]]))
        yaw = np.interp(sc, cum, yaw_path)
        over = s - sc
        x, y = x + over * np.cos(yaw), y + over * np.sin(yaw)
    ramp = (t / 4.0) ** 2 * (3.0 - 2.0 * t / 4.0)
    d = lat[:, None] * ramp[None]
    x, y = x - d * np.sin(yaw), y + d * np.cos(yaw)
    dd = np.diff(np.concatenate([np.zeros((num, 1)), d], axis=1), axis=1)
    ds = np.diff(np.concatenate([np.zeros((num, 1)), s], axis=1), axis=1)
    yaw = yaw + np.arctan2(dd, np.maximum(ds, 0.5))
    c, si = np.cos(rot)[:, None], np.sin(rot)[:, None]
    x, y = c * x - si * y, si * x + c * y
    yaw = (yaw + rot[:, None] + np.pi) % (2 * np.pi) - np.pi
    return np.stack([x, y, yaw], axis=-1)


class PolicySampler:
    """Plans from a policy: ``policy(obs, num, rng) -> (num, 8, 3)`` (obs of one scene, see :class:`PlanSampler`)."""

    name = "policy"

    def __init__(self, policy: Callable[[dict, int, np.random.Generator], np.ndarray]):
        self.policy = policy

    def sample(self, scene, obs, num: int, rng: np.random.Generator) -> np.ndarray:
        plans = np.asarray(self.policy(obs, num, rng), np.float64).reshape(num, 8, 3)
        return plans


class VLAPlanSampler:
    """Samples of an ``irlvla_gym.policies`` VLA network checkpoint (a directory or a shipped name like
    ``"bc_default"``): the deterministic plan first, then perturbations of it in the env's normalised action space,
    clipped to [-1, 1] and decoded with ``irlvla_gym.plans.codec.action_to_plan``. ``exploration="diagonal"``:
    ``mean + std * N(0, 1)`` per number (std = the Gaussian head's ``exp(log_std)``, 0.1 for other heads);
    ``"smooth"``: :func:`irlvla_gym.plans.exploration.perturb_actions` with each sample's stds scaled by a magnitude
    drawn from ``magnitudes`` (:meth:`configure` sets both from a :class:`CandidateConfig`). Observations are built
    with the network's own ``obs_keys``."""

    name = "policy"

    def __init__(self, path: str):
        import torch

        from irlvla_gym.obs.registry import ObservationBuilder
        from irlvla_gym.policies import VLANetwork, prepare_observations, resolve_checkpoint

        self.net = VLANetwork.from_pretrained(resolve_checkpoint(path)).eval()
        self._prepare = prepare_observations
        self.builder = ObservationBuilder(self.net.obs_keys)
        log_std = getattr(getattr(self.net, "head", None), "log_std", None)
        self.std = (torch.exp(log_std).detach().numpy().astype(np.float64) if log_std is not None
                    else np.full(24, 0.1))
        self.exploration = "diagonal"
        self.magnitudes: tuple[float, ...] = (1.0,)

    def configure(self, config: "CandidateConfig") -> None:
        """Take the exploration kind and magnitudes of a dataset's candidate config."""
        self.exploration = config.policy_exploration
        self.magnitudes = tuple(config.magnitudes)

    def sample(self, scene, obs, num: int, rng: np.random.Generator) -> np.ndarray:
        import torch

        from irlvla_gym.plans.codec import action_to_plan
        from irlvla_gym.plans.exploration import SMOOTH_STD, perturb_actions

        o = self.builder.observe_batch([scene])
        with torch.no_grad():
            mean = self.net(self._prepare(o, self.net.obs_keys, "cpu")).numpy().astype(np.float64)[0]
        if self.exploration == "smooth":
            scale = rng.choice(np.asarray(self.magnitudes, np.float64), size=num)
            actions = perturb_actions(mean, num, rng, std=np.asarray(SMOOTH_STD) * scale[:, None])
            actions[0] = mean  # the deterministic plan first
        else:
            eps = rng.standard_normal((num, mean.shape[-1]))
            eps[0] = 0.0
            actions = mean[None] + self.std[None] * eps
        return action_to_plan(np.clip(actions, -1.0, 1.0)).reshape(num, 8, 3)


def load_policy_sampler(spec: str | Callable | None) -> PolicySampler | VLAPlanSampler | None:
    """A :class:`PolicySampler` from ``--policy``, or None (with a warning) when it cannot be loaded.

    ``spec`` may be: a callable ``(obs, num, rng) -> plans``; ``"module:function"`` naming such a callable (or a
    factory returning one when called without arguments); or a VLA checkpoint (directory, or a shipped name such as
    ``"bc_default"``): handed to ``irlvla_gym.policies.load_plan_sampler(path)`` if the policies package provides
    one, else sampled by :class:`VLAPlanSampler`. When none of these is available the policy slots are filled with
    perturbations (warning on stderr).
    """
    if spec is None:
        return None
    if callable(spec):
        return PolicySampler(spec)
    spec = str(spec)
    if ":" in spec and not os.path.exists(spec):
        mod, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        try:
            import inspect

            if not inspect.signature(obj).parameters:
                obj = obj()
        except (TypeError, ValueError):
            pass
        return PolicySampler(obj)
    try:
        policies = importlib.import_module("irlvla_gym.policies")
    except ImportError:
        policies = None
    if policies is not None and "load_plan_sampler" in getattr(policies, "__all__", ()):
        return PolicySampler(getattr(policies, "load_plan_sampler")(spec))
    try:
        return VLAPlanSampler(spec)
    except (ImportError, AttributeError) as exc:
        print(f"irlvla rwm dataset: warning: --policy {spec}: no VLA policy loader available ({exc}); policy "
              "samples skipped (perturbations fill those slots)", file=sys.stderr)
        return None


class CandidateGenerator:
    """All candidates of a scene: (K, 8, 3) plans and (K,) source codes (:data:`SOURCES`)."""

    def __init__(self, config: CandidateConfig, policy: PolicySampler | None = None,
                 vocabulary: np.ndarray | None = None):
        self.config = config
        self.vocab = VocabularySampler(vocabulary)
        self.perturb = PerturbationSampler(config)
        self.policy = policy
        if callable(getattr(policy, "configure", None)):
            policy.configure(config)

    def __call__(self, scene, obs: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        expert = np.asarray(scene.ego.future, np.float64)
        near = self.vocab.nearest(expert, cfg.vocab_near)
        parts = [(self.vocab.vocabulary[near], 1),
                 (self.vocab.sample(scene, obs, cfg.vocab_random, rng, exclude=near), 2)]
        n_policy = cfg.policy if self.policy is not None else 0
        if n_policy:
            parts.append((self.policy.sample(scene, obs, n_policy, rng), 4))
        used = sum(len(p) for p, _ in parts)
        n_perturb = cfg.num_candidates - used
        if n_perturb < 0:
            raise ValueError(f"num_candidates {cfg.num_candidates} < vocab_near + vocab_random + policy = {used}")
        parts.insert(2, (self.perturb.sample(scene, obs, n_perturb, rng), 3))
        plans = np.concatenate([p for p, _ in parts])
        codes = np.concatenate([np.full(len(p), c, np.int8) for p, c in parts])
        return plans, codes


# ---- labelling ------------------------------------------------------------------------------------------------


def reference_progress_fn() -> tuple[Callable | None, str]:
    """(function scene -> reference progress or None, name): PDM-Closed when available, else the batch best."""
    try:
        from irlvla_gym.planners import pdm_reference_progress

        return pdm_reference_progress, "pdm_closed"
    except ImportError:
        return None, "batch_best"


def label_plans(scene, plans: np.ndarray, reference_progress: float | None) -> dict[str, np.ndarray]:
    """Scorer labels (:data:`LABELS`) of (M, 8, 3) plans: fast impl, log traffic, human filter, no EC."""
    from irlvla_gym.metrics import score_plans

    r = score_plans(scene, plans, human_filter=True, traffic="log", reference_progress=reference_progress,
                    impl="fast")
    out = {n: np.asarray(getattr(r, n), np.float64) for n in LABELS[:11]}
    out["progress"] = np.asarray(r.progress, np.float64)
    ref = np.nan if reference_progress is None else float(reference_progress)
    out["reference_progress"] = np.full(len(plans), ref)
    return out


@dataclass
class ShardTask:
    """One unit of work: scenes ``indices`` of ``source`` (split name or store path)."""

    shard: int
    indices: list[int]
    source: str
    seed: int
    candidates: dict
    policy: Any = None
    obs_config: dict | None = None


def _scene_source(source: str):
    from irlvla_gym.scenes.source import SceneSource

    return SceneSource(source)


def build_shard(task: ShardTask) -> dict[str, Any]:
    """Generate, label and observe the scenes of a shard. Returns plain numpy arrays (rows and obs) + skipped."""
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads(1)
    from irlvla_gym.obs.registry import ObservationBuilder

    cfg = CandidateConfig.from_dict(task.candidates)
    gen = CandidateGenerator(cfg, load_policy_sampler(task.policy))
    builder = ObservationBuilder(OBS_KEYS, task.obs_config)
    ref_fn, _ = reference_progress_fn()
    src = _scene_source(task.source)
    rows: dict[str, list] = {k: [] for k in ("scene", "token", "slot", "source", "plan", *LABELS)}
    obs_list, scene_ids, skipped = [], [], []
    for index in task.indices:
        try:
            scene = src.load(index)
        except Exception as exc:  # one bad scene must not stop a long run
            skipped.append(f"{src.token(index)}: {type(exc).__name__}: {exc}")
            continue
        rng = np.random.default_rng([task.seed, index])
        obs = builder.observe(scene)
        plans, codes = gen(scene, obs, rng)
        allp = np.concatenate([np.asarray(scene.ego.future, np.float64)[None], plans])
        ref = float(ref_fn(scene)) if ref_fn is not None else None
        labels = label_plans(scene, allp, ref)
        M = len(allp)
        rows["scene"].append(np.full(M, index, np.int32))
        rows["token"].extend([scene.token] * M)
        rows["slot"].append(np.arange(M, dtype=np.int16))
        rows["source"].append(np.concatenate([[0], codes]).astype(np.int8))
        rows["plan"].append(allp.reshape(M, 24))
        for k in LABELS:
            rows[k].append(labels[k])
        obs_list.append(obs)
        scene_ids.append(index)
    out_rows = {k: (np.concatenate(v) if k != "token" else np.asarray(v, dtype=object)) if v else None
                for k, v in rows.items()}
    obs_arrays = {k: np.stack([o[k] for o in obs_list]) for k in obs_entries(obs_list[0])} if obs_list else {}
    return {"shard": task.shard, "rows": out_rows, "obs": obs_arrays, "scenes": np.asarray(scene_ids, np.int32),
            "skipped": skipped}


# ---- writing --------------------------------------------------------------------------------------------------


def _blake2b(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def write_shard(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write one shard's parquet + obs npz atomically; returns its manifest entry."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from irlvla_gym.utils import atomic_write

    name = shard_name(result["shard"])
    d = out / "shards"
    d.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    n = 0 if rows["scene"] is None else len(rows["scene"])
    cols = {}
    if n:
        cols["scene"] = pa.array(rows["scene"], pa.int32())
        cols["token"] = pa.array(list(rows["token"]), pa.string())
        cols["slot"] = pa.array(rows["slot"], pa.int16())
        cols["source"] = pa.array(rows["source"], pa.int8())
        cols["plan"] = pa.FixedSizeListArray.from_arrays(pa.array(rows["plan"].reshape(-1), pa.float64()), 24)
        for k in LABELS:
            cols[k] = pa.array(rows[k], pa.float64())
        table = pa.table(cols)
    else:
        table = pa.table({"scene": pa.array([], pa.int32())})
    pq_path, npz_path = d / f"{name}.parquet", d / f"{name}.obs.npz"
    with atomic_write(pq_path) as fh:
        pq.write_table(table, fh, compression="zstd")
    _write_obs(npz_path, result["scenes"], result["obs"])
    return {"name": name, "scenes": [int(s) for s in result["scenes"]], "rows": n, "skipped": result["skipped"],
            "parquet_blake2b": _blake2b(pq_path), "obs_blake2b": _blake2b(npz_path)}


def _write_manifest(out: Path, manifest: dict) -> None:
    from irlvla_gym.utils import atomic_write

    manifest["shards"] = sorted(manifest["shards"], key=lambda s: s["name"])
    with atomic_write(out / "manifest.json", "w") as fh:
        json.dump(manifest, fh, indent=1)


def _open_manifest(out: Path, spec: dict) -> dict:
    """The manifest of the dataset being built at ``out`` with settings ``spec`` (every manifest key but
    ``shards``): the existing one to resume, or a new empty one written there. Raises DatasetError naming the
    differing settings when ``out`` holds a dataset built otherwise."""
    spec = json.loads(json.dumps(spec))  # as it reads back from the manifest (tuples -> lists)
    if (out / "manifest.json").exists():
        manifest = read_manifest(out)
        old = {k: v for k, v in manifest.items() if k != "shards"}
        if old != spec:
            diff = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            raise DatasetError(f"{out} holds a dataset built with different settings ({', '.join(diff)}); "
                               "use another --out or the same settings to resume")
        return manifest
    manifest = dict(spec, shards=[])
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, manifest)
    return manifest


def _write_obs(path: Path, scenes: np.ndarray, obs: Mapping[str, np.ndarray]) -> None:
    """A shard's observation file (scene indices + one array per entry, no pickles), written atomically."""
    from irlvla_gym.utils import atomic_write

    with atomic_write(path) as fh:
        np.savez_compressed(fh, scene=scenes, **obs)


def read_manifest(path: str | os.PathLike) -> dict:
    p = Path(path) / "manifest.json"
    try:
        manifest = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no RWM dataset at {path} (missing {p})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{p}: corrupted manifest ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{p}: format version {manifest.get('format_version')}, expected {FORMAT_VERSION}")
    return manifest


# ---- backends -------------------------------------------------------------------------------------------------


def _init_worker() -> None:
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads(1)


def _shard_names(tasks: Sequence[ShardTask]) -> str:
    return ", ".join(f"shard {t.shard} (scenes {t.indices[0]}-{t.indices[-1]})" for t in tasks)


class WorkerDiedError(ChildProcessError):
    """A dataset worker process died (segfault, OOM kill, ``os._exit``) while building the named shards."""


def run_local(tasks: Sequence[ShardTask], workers: int) -> Iterator[dict[str, Any]]:
    """Shard results in completion order: in-process for ``workers <= 1``, else spawned worker processes.

    A worker that dies does not hang the build: its pool breaks, the unfinished shards are rerun one at a time in a
    fresh single-worker pool (so the culprit is the first to fail there), the shard that kills a worker again is
    given up, and the others complete. Given-up shards are left out of the manifest (a rerun retries them) and named
    in a :class:`WorkerDiedError` raised after every other shard was written."""
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield build_shard(t)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = mp.get_context("spawn")
    pending, size, dead = list(tasks), min(workers, len(tasks)), []
    while pending:
        with ProcessPoolExecutor(size, mp_context=context, initializer=_init_worker) as pool:
            futures = [(t, pool.submit(build_shard, t)) for t in pending]
            pending, culprit_found = [], False
            for t, future in futures:
                try:
                    yield future.result()
                except BrokenProcessPool:
                    if size == 1 and not culprit_found:  # shards run in order here: the first to fail killed it
                        dead.append(t)
                        culprit_found = True
                    else:
                        pending.append(t)
        size = 1  # after a death, isolate the unfinished shards to find the culprit
    if dead:
        names = _shard_names(dead)
        raise WorkerDiedError(f"a worker process died while building {names}; every other shard was written; "
                              "rerun the same command to retry (or --workers 1 to see the error)")


def run_ray(tasks: Sequence[ShardTask], workers: int, address: str | None = None) -> Iterator[dict[str, Any]]:
    """Shard results from Ray remote tasks (one CPU each); starts a local Ray instance unless one is running."""
    try:
        import ray
    except ImportError:
        raise ImportError("--backend ray needs Ray: pip install 'irlvla-gym[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        started = True
    from ray.exceptions import RayError

    dead = []
    try:
        # Ray retries a task whose worker process died (max_retries); a shard that still fails is named at the end
        remote = ray.remote(num_cpus=1, max_retries=1)(build_shard)
        task_of = {remote.remote(t): t for t in tasks}
        pending = list(task_of)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except RayError:
                dead.append(task_of[done[0]])
    finally:
        if started:
            ray.shutdown()
    if dead:
        names = _shard_names(dead)
        raise WorkerDiedError(f"Ray tasks failed while building {names} (a worker died or the shard raised); every "
                              "other shard was written; rerun the same command to retry")


BACKENDS = {"local": run_local, "ray": run_ray}


def build_dataset(source: str, out: str | os.PathLike, *, num_scenes: int | None = None, start: int = 0,
                  candidates: CandidateConfig | None = None, seed: int = 0, policy: Any = None,
                  backend: str = "local", workers: int = 1, shard_size: int = 32, progress: bool = True,
                  obs_config: dict | None = None) -> dict:
    """Build (or resume) an RWM dataset; returns the manifest (module docs).

    Args:
        source: synthetic split name (``"synthetic-train"``) or scene-store directory.
        out: dataset directory.
        num_scenes: scenes ``start .. start + num_scenes - 1`` of the source (default: all).
        candidates: :class:`CandidateConfig`. seed: base seed (per-scene generators ``[seed, index]``).
        policy: ``--policy`` spec (:func:`load_policy_sampler`); must be picklable for multi-worker backends.
        backend: ``"local"`` or ``"ray"``. workers: processes / Ray CPUs. shard_size: scenes per shard.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    cand = candidates or CandidateConfig()
    out = Path(out)
    src = _scene_source(source)
    stop = len(src) if num_scenes is None else min(len(src), start + num_scenes)
    indices = list(range(start, stop))
    _, ep_norm = reference_progress_fn()
    spec = {"format_version": FORMAT_VERSION, "source": str(source), "start": start, "num_scenes": len(indices),
            "seed": seed, "candidates": cand.to_dict(), "policy": None if policy is None else str(policy),
            "shard_size": shard_size, "ep_normaliser": ep_norm, "obs_keys": list(OBS_KEYS),
            "obs_config": obs_config, "scorer": {"impl": "fast", "traffic": "log", "human_filter": True,
                                                  "previous_plan": None}, "sources": list(SOURCES),
            "labels": list(LABELS)}
    manifest = _open_manifest(out, spec)
    done = {s["name"] for s in manifest["shards"] if (out / "shards" / f"{s['name']}.parquet").exists()
            and (out / "shards" / f"{s['name']}.obs.npz").exists()}
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] in done]
    tasks = [ShardTask(k, indices[i:i + shard_size], str(source), seed, cand.to_dict(), policy, obs_config)
             for k, i in enumerate(range(0, len(indices), shard_size)) if shard_name(k) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(indices), initial=len(indices) - sum(len(t.indices) for t in tasks), unit="scene",
                   desc=f"rwm dataset {Path(str(source)).name}")
    runner = BACKENDS[backend]
    for result in runner(tasks, workers):
        manifest["shards"].append(write_shard(out, result))
        _write_manifest(out, manifest)
        if bar is not None:
            bar.update(len(result["scenes"]) + len(result["skipped"]))
    if bar is not None:
        bar.close()
    return manifest



def reobserve_dataset(source_dir: str | os.PathLike, out: str | os.PathLike, obs_config: dict | None,
                      progress: bool = False) -> dict:
    """A copy of a finished dataset with its observations rebuilt under ``obs_config`` (e.g. 64 agent slots or the
    agents' logged futures); plans and labels are copied, not recomputed (they do not depend on the observation
    settings), so this takes seconds per thousand scenes instead of a relabelling. Resumable shard by shard; returns
    the manifest, which records ``observations_from`` (the source dataset and its obs_config).

    Raises:
        DatasetError: ``out`` holds another dataset, or a source shard is missing or damaged.
    """
    import shutil

    from irlvla_gym.obs.registry import ObservationBuilder

    src_dir, out = Path(source_dir), Path(out)
    src = read_manifest(src_dir)
    spec = {k: v for k, v in src.items() if k not in ("shards", "observations_from")}
    spec["obs_config"] = obs_config
    spec["observations_from"] = {"dataset": str(src_dir.resolve()), "obs_config": src.get("obs_config")}
    manifest = _open_manifest(out, spec)
    (out / "shards").mkdir(exist_ok=True)
    done = {s["name"] for s in manifest["shards"]}
    scenes = _scene_source(src["source"])
    builder = ObservationBuilder(OBS_KEYS, obs_config)
    todo = [s for s in src["shards"] if s["name"] not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(s["scenes"]) for s in src["shards"]), unit="scene",
                   initial=sum(len(s["scenes"]) for s in src["shards"] if s["name"] in done),
                   desc=f"rwm reobserve {out.name}")
    for shard in todo:
        pq_src = src_dir / "shards" / f"{shard['name']}.parquet"
        if not pq_src.exists():
            raise DatasetError(f"{pq_src}: missing shard of the source dataset")
        obs = [builder.observe(scenes.load(i)) for i in shard["scenes"]]
        shutil.copyfile(pq_src, out / "shards" / pq_src.name)  # identical rows: same hash as the source's
        npz_path = out / "shards" / f"{shard['name']}.obs.npz"
        _write_obs(npz_path, np.asarray(shard["scenes"], np.int32),
                   {k: np.stack([o[k] for o in obs]) for k in obs_entries(obs[0])} if obs else {})
        manifest["shards"].append(dict(shard, obs_blake2b=_blake2b(npz_path)))
        _write_manifest(out, manifest)
        if bar is not None:
            bar.update(len(shard["scenes"]))
    if bar is not None:
        bar.close()
    return manifest


@dataclass
class DatasetConfig:
    """One ``irlvla rwm dataset`` run (each field is the CLI flag of the same name; :func:`run_dataset`)."""

    out: str
    """dataset directory (rerun the same command to resume an interrupted build)"""
    split: str = "synthetic-train"
    """synthetic split name or scene-store directory"""
    num_scenes: int | None = option(None, type=count_or_all)
    """scenes of the source from --start on (default or 0: all, as in irlvla leaderboard)"""
    start: int = 0
    """first scene index"""
    candidates: int = 64
    """K candidate plans per scene (plus the expert)"""
    policy: str | None = None
    """policy checkpoint or module:callable for policy samples"""
    policy_samples: int | None = None
    """policy samples per scene (default: the candidate config's 8); perturbations fill the rest of K"""
    policy_exploration: Literal["smooth", "diagonal"] = "smooth"
    """how a VLA checkpoint's samples spread around its plan (smooth directions, as PPO's exploration='smooth'; or
    the head's per-number std)"""
    backend: Literal["local", "ray"] = "local"
    """local processes or Ray tasks"""
    workers: int = 1
    """processes (local) or Ray CPUs"""
    shard_size: int = 32
    """scenes per shard"""
    seed: int = 0
    """base seed (per-scene generators [seed, scene index])"""
    max_agents: int | None = None
    """agent slots of the model's observation (ObsConfig.max_agents, nearest first; default 32). Real windows have
    35-65 agents within 64 m, so 32 slots can drop the vehicle a plan hits (reward_models/README.md, real data)"""
    agents_future: Literal["none", "logged"] = "none"
    """'logged': the observations also carry the agents' logged futures (ObsConfig.agents_future; privileged, for a
    reward model with agent_forecast 'logged')"""
    from_dataset: str | None = None
    """copy the plans and labels of this finished dataset and only rebuild its observations with this run's
    --max-agents / --agents-future (the source, scenes and candidates are the dataset's; other flags ignored)"""
    progress: bool = True
    """progress bar"""

    def obs_config(self) -> dict | None:
        """The observation settings of ``max_agents`` and ``agents_future`` (None: the ObsConfig defaults)."""
        out: dict = {}
        if self.max_agents is not None:
            if self.max_agents < 1:
                raise ValueError(f"max_agents must be >= 1, got {self.max_agents}")
            out["max_agents"] = int(self.max_agents)
        if self.agents_future != "none":
            out["agents_future"] = self.agents_future
        return out or None

    def candidate_config(self) -> CandidateConfig:
        """The :class:`CandidateConfig` of ``candidates``: the default source counts, or K / 8 per source when
        they do not fit in K."""
        cand = CandidateConfig(num_candidates=self.candidates, policy_exploration=self.policy_exploration)
        if self.policy_samples is not None:
            if self.policy_samples < 0:
                raise ValueError(f"policy_samples must be >= 0, got {self.policy_samples}")
            cand = dataclasses.replace(cand, policy=int(self.policy_samples))
        if cand.vocab_near + cand.vocab_random + cand.policy > cand.num_candidates:
            share = max(self.candidates // 8, 0)
            cand = dataclasses.replace(cand, vocab_near=share, vocab_random=share,
                                       policy=share if self.policy_samples is None else cand.policy)
        if cand.vocab_near + cand.vocab_random + cand.policy > cand.num_candidates:
            raise ValueError(f"policy_samples {cand.policy} does not fit in candidates {self.candidates} "
                             f"with {cand.vocab_near} + {cand.vocab_random} vocabulary plans")
        return cand


def run_dataset(cfg: DatasetConfig) -> dict:
    """Build (or resume) the dataset of ``cfg``; returns its manifest (:func:`build_dataset`, or
    :func:`reobserve_dataset` with ``from_dataset``)."""
    if cfg.from_dataset:
        return reobserve_dataset(cfg.from_dataset, cfg.out, cfg.obs_config(), progress=cfg.progress)
    return build_dataset(cfg.split, cfg.out, num_scenes=cfg.num_scenes, start=cfg.start,
                         candidates=cfg.candidate_config(), seed=cfg.seed, policy=cfg.policy, backend=cfg.backend,
                         workers=cfg.workers, shard_size=cfg.shard_size, progress=cfg.progress,
                         obs_config=cfg.obs_config())


# ---- reading --------------------------------------------------------------------------------------------------


@dataclass
class RWMData:
    """A loaded dataset, dense per scene (every scene has the same number of plans M = K + 1, expert at slot 0).

    Attributes:
        scenes: (N,) scene indices. tokens: N tokens.
        plans: (N, M, 8, 3) float32. sources: (N, M) int8 (:data:`SOURCES`).
        labels: name -> (N, M) float32 for :data:`LABELS`.
        obs: entry -> (N, ...) model inputs (:data:`OBS_ENTRIES`).
        manifest: the dataset manifest.
    """

    scenes: np.ndarray
    tokens: list[str]
    plans: np.ndarray
    sources: np.ndarray
    labels: dict[str, np.ndarray]
    obs: dict[str, np.ndarray]
    manifest: dict

    def __len__(self) -> int:
        return len(self.scenes)

    def subset(self, idx: np.ndarray) -> "RWMData":
        idx = np.asarray(idx)
        return RWMData(self.scenes[idx], [self.tokens[i] for i in idx], self.plans[idx], self.sources[idx],
                       {k: v[idx] for k, v in self.labels.items()}, {k: v[idx] for k, v in self.obs.items()},
                       self.manifest)


def concat_data(parts: Sequence[RWMData]) -> RWMData:
    """One :class:`RWMData` of several datasets' scenes, in order (e.g. synthetic scenes and real windows).

    Scene indices keep their per-dataset values (they are not unique across parts); the manifest is the first part's
    with ``"parts"`` (every part's manifest without its shard list) added.

    Raises:
        DatasetError: ``parts`` is empty, or the parts differ in plans per scene (M = K + 1) or observation shapes.
    """
    if not parts:
        raise DatasetError("concat_data: parts is empty")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for i, d in enumerate(parts[1:], 1):
        if d.plans.shape[1:] != first.plans.shape[1:]:
            raise DatasetError(f"concat_data: part {i} ({d.manifest.get('source')}) has {d.plans.shape[1]} plans per "
                               f"scene, part 0 ({first.manifest.get('source')}) {first.plans.shape[1]}")
        entries = obs_entries(first.obs)
        if obs_entries(d.obs) != entries:
            raise DatasetError(f"concat_data: part {i} ({d.manifest.get('source')}) has observation entries "
                               f"{list(obs_entries(d.obs))}, part 0 {list(entries)}")
        bad = [k for k in entries if d.obs[k].shape[1:] != first.obs[k].shape[1:]]
        if bad:
            raise DatasetError(f"concat_data: part {i} ({d.manifest.get('source')}) differs in observation shapes "
                               f"({', '.join(bad)})")
    manifest = dict(first.manifest, parts=[{k: v for k, v in d.manifest.items() if k != "shards"} for d in parts])
    return RWMData(np.concatenate([d.scenes for d in parts]), [t for d in parts for t in d.tokens],
                   np.concatenate([d.plans for d in parts]), np.concatenate([d.sources for d in parts]),
                   {k: np.concatenate([d.labels[k] for d in parts]) for k in first.labels},
                   {k: np.concatenate([d.obs[k] for d in parts]) for k in obs_entries(first.obs)}, manifest)


def iter_rows(path: str | os.PathLike) -> Iterable[tuple[str, Any]]:
    """(shard name, pyarrow Table) for every listed shard."""
    import pyarrow.parquet as pq

    manifest = read_manifest(path)
    for s in manifest["shards"]:
        p = Path(path) / "shards" / f"{s['name']}.parquet"
        try:
            yield s["name"], pq.read_table(p)
        except Exception as exc:
            raise DatasetError(f"{p}: unreadable shard ({type(exc).__name__}: {exc})") from None


def load_dataset(path: str | os.PathLike, max_scenes: int | None = None) -> RWMData:
    """Load a dataset directory into memory (:class:`RWMData`), scenes in index order."""
    manifest = read_manifest(path)
    scene_l, tok_l, plan_l, src_l, obs_l = [], [], [], [], []
    lab_l: dict[str, list] = {k: [] for k in LABELS}
    M = manifest["candidates"]["num_candidates"] + 1
    for s in sorted(manifest["shards"], key=lambda s: s["name"]):
        if not s["rows"]:
            continue
        d = Path(path) / "shards"
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(d / f"{s['name']}.parquet")
            with np.load(d / f"{s['name']}.obs.npz", allow_pickle=False) as z:
                obs = {k: z[k] for k in obs_entries(z.files)}
                obs_scenes = z["scene"]
        except Exception as exc:
            raise DatasetError(f"{d / s['name']}.*: unreadable shard ({type(exc).__name__}: {exc})") from None
        n = t.num_rows // M
        scenes = t.column("scene").to_numpy().reshape(n, M)[:, 0]
        if not np.array_equal(scenes, obs_scenes):
            raise DatasetError(f"{d / s['name']}: parquet and obs npz disagree on scenes")
        scene_l.append(scenes)
        tok_l.extend(t.column("token").to_pylist()[::M])
        flat = t.column("plan").combine_chunks().flatten().to_numpy()
        plan_l.append(flat.reshape(n, M, 8, 3).astype(np.float32))
        src_l.append(t.column("source").to_numpy().reshape(n, M))
        for k in LABELS:
            lab_l[k].append(t.column(k).to_numpy().reshape(n, M).astype(np.float32))
        obs_l.append(obs)
    if not scene_l:
        raise DatasetError(f"{path}: the dataset has no scenes yet")
    scenes = np.concatenate(scene_l)
    order = np.argsort(scenes, kind="stable")
    if max_scenes is not None:
        order = order[:max_scenes]
    data = RWMData(scenes[order], [tok_l[i] for i in order], np.concatenate(plan_l)[order],
                   np.concatenate(src_l)[order], {k: np.concatenate(v)[order] for k, v in lab_l.items()},
                   {k: np.concatenate([o[k] for o in obs_l])[order] for k in obs_entries(obs_l[0])}, manifest)
    return data


__all__ = [
    "FORMAT_VERSION", "SOURCES", "LABELS", "OBS_KEYS", "OBS_ENTRIES", "OPTIONAL_ENTRIES", "obs_entries",
    "CandidateConfig", "PlanSampler", "VocabularySampler",
    "PerturbationSampler", "PolicySampler", "CandidateGenerator", "load_policy_sampler", "perturb_plans",
    "label_plans", "build_shard", "build_dataset", "reobserve_dataset", "concat_data", "load_dataset",
    "read_manifest", "RWMData",
    "DatasetError",
    "DatasetConfig", "run_dataset",
]
