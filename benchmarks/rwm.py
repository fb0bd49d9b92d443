"""Reward world model speed on one core vs the EPDMS scorer's fast path, on the same plans.

Run ``python -m benchmarks.rwm`` (a table), ``--json`` (one JSON object), ``--scenes N`` (default 10),
``--ckpt DIR`` (default: the shipped checkpoint; an untrained model of the default config if none is shipped).

Two workloads, both with one torch/BLAS thread:

* **one scene x 256 plans** (vocabulary search, best-of-K): the scorer is ``irlvla_gym.metrics.score_plans``
  (fast implementation: LQR/bicycle simulation + scoring + human filter); the RWM scores the same 256 plans from
  the scene's observation dict. Both sides have per-scene work that is reused by every later batch of plans of the
  same scene: the scorer's ``ScoringContext`` (``prepare_scene`` plus the map / agent tables it fills on first use)
  and the RWM's scene encoding (``encode_scene``: scene tokens, attention keys/values, map lookup, agent forecast).
  So three comparisons are printed:

  - **per-scene work cached on both sides** (the steady state of an RL loop that scores many plans per scene):
    scorer with a warm context vs ``RewardWorldModel.score`` with a cached encoding. Goal: >= 20x.
  - **per-scene work included on both sides** (a scene seen once): ``score_plans`` with a fresh context vs
    ``encode_scene`` + ``score``. Goal: >= 20x.
  - the RWM paying its scene encoding while the scorer's context stays warm (reported, no goal).

  ``rwm + obs`` adds building the observation from the scene (bev, ego, instruction, agents, map).
* **256 scenes x 1 plan** (a vector env step): the scorer is one ``score_plans`` call per scene (contexts warm);
  the RWM encodes the 256 scenes as one batch and scores one plan each (observations given, as an env has them).

The score-only RWM time is split into the plan inputs (``plan_inputs``: the compiled per-pose features) and the
network; each reports wall and process CPU time. Per scene the best of ``--repeats`` runs is taken; the table
reports the median over scenes.
"""

from __future__ import annotations

from benchmarks.common import force_single_thread

force_single_thread()

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _best(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def _best_cpu(fn, repeats: int) -> tuple[float, float]:
    """(best wall, best process CPU) seconds over ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import add_common_args, at_least, report

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ckpt", default=None)
    add_common_args(parser)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from irlvla_gym.plans.vocabulary import load_vocabulary
    from irlvla_gym.metrics import prepare_scene, score_plans
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene
    from reward_models import DEFAULT_CHECKPOINT, RewardWorldModel, load_model
    from reward_models.model import OBS_KEYS

    if args.ckpt or (DEFAULT_CHECKPOINT / "model.safetensors").exists():
        model, which = load_model(args.ckpt), str(args.ckpt or "shipped default")
    else:
        model, which = RewardWorldModel().eval(), "untrained default config"
    spec = SPLITS["synthetic-test"]
    scenes = [generate_scene(spec.first_seed + i, spec.config, spec.name) for i in range(args.scenes)]
    plans = load_vocabulary(256)
    plans32 = plans.astype(np.float32)
    builder = ObservationBuilder(OBS_KEYS)
    rows = []
    with torch.inference_mode():
        for scene in scenes:
            ctx = prepare_scene(scene)
            score_plans(scene, plans[:4], context=ctx)
            t_score = _best(lambda: score_plans(scene, plans, context=ctx), args.repeats)
            t_score_cold = _best(lambda: score_plans(scene, plans), args.repeats)  # a fresh context per call
            obs = builder.observe(scene)
            model.predict_reward(obs, plans32)
            t_model = _best(lambda: model.predict_reward(obs, plans32), args.repeats)
            t_obs = _best(lambda: ObservationBuilder(OBS_KEYS).observe(scene), args.repeats)
            enc = model.encode_scene(obs)
            x = model.plan_inputs(enc, plans32)
            split = [*_best_cpu(lambda: model.encode_scene(obs), args.repeats),
                     *_best_cpu(lambda: model.plan_inputs(enc, plans32), args.repeats),
                     *_best_cpu(lambda: model.score(enc, None, inputs=x), args.repeats),
                     *_best_cpu(lambda: model.score(enc, plans32), args.repeats)]
            rows.append((t_score, t_score_cold, t_model, t_obs, *split))
        a = np.median(np.asarray(rows), axis=0)
        t_score, t_cold, t_model, t_obs = a[:4]
        enc_w, enc_c, inp_w, inp_c, net_w, net_c, only_w, only_c = a[4:]

        # 256 scenes x 1 plan (scenes cycled)
        n = 256
        many = [scenes[i % len(scenes)] for i in range(n)]
        ctxs = {s.token: prepare_scene(s) for s in scenes}
        one = plans[np.arange(n) % 256][:, None]
        for s in scenes:
            score_plans(s, one[0], context=ctxs[s.token])
        t = time.perf_counter()
        for s, p in zip(many, one):
            score_plans(s, p, context=ctxs[s.token])
        t_score_many = time.perf_counter() - t
        obs_b = builder.observe_batch(many)
        model.predict_reward(obs_b, one.astype(np.float32))
        t_model_many = _best(lambda: model.predict_reward(obs_b, one.astype(np.float32)), args.repeats)

    results = [
        at_least("scorer fast path, 1 scene x 256 plans, warm context", 256 / t_score, "plans/s", None,
                 note=f"{t_score * 1e3:.1f} ms per batch (simulation + scoring)"),
        at_least("scorer fast path, 1 scene x 256 plans, fresh context", 256 / t_cold, "plans/s", None,
                 note=f"{t_cold * 1e3:.1f} ms per batch"),
        at_least("RWM, score only (scene encoding cached)", 256 / only_w, "plans/s", None,
                 note=f"{only_w * 1e3:.2f} ms wall / {only_c * 1e3:.2f} ms CPU per batch"),
        at_least("RWM, encode + score", 256 / t_model, "plans/s", None, note=f"{t_model * 1e3:.2f} ms per batch"),
        at_least("speed-up, per-scene work cached on both sides", t_score / only_w, "x", 20.0,
                 note="scorer warm context vs RWM score with a cached encoding"),
        at_least("speed-up, per-scene work included on both sides", t_cold / t_model, "x", 20.0,
                 note="scorer fresh context vs RWM encode + score"),
        at_least("speed-up, RWM encodes, scorer context warm", t_score / t_model, "x", None),
        at_least("RWM split: scene encoding", enc_w * 1e3, "ms", None, note=f"CPU {enc_c * 1e3:.2f} ms"),
        at_least("RWM split: plan inputs (compiled features)", inp_w * 1e3, "ms", None,
                 note=f"CPU {inp_c * 1e3:.2f} ms"),
        at_least("RWM split: network", net_w * 1e3, "ms", None, note=f"CPU {net_c * 1e3:.2f} ms"),
        at_least("RWM + building the obs vs scorer, fresh context", t_cold / (t_model + t_obs), "x", None,
                 note=f"obs build {t_obs * 1e3:.1f} ms"),
        at_least("scorer fast path, 256 scenes x 1 plan", n / t_score_many, "plans/s", None),
        at_least("RWM, 256 scenes x 1 plan (obs given)", n / t_model_many, "plans/s", None),
        at_least("RWM speed-up vs scorer, 256 scenes x 1 plan", t_score_many / t_model_many, "x", None),
    ]
    report("reward world model", results, as_json=args.json,
           meta={"scenes": args.scenes, "model": which, "repeats": args.repeats})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
