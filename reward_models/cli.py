"""``irlvla rwm``: build the RWM dataset, train the model, evaluate it (``dataset`` / ``train`` / ``eval``)."""

from __future__ import annotations

import json


def _dataset(args) -> int:
    from reward_models.dataset import CandidateConfig, build_dataset

    cand = CandidateConfig(num_candidates=args.candidates)
    if cand.vocab_near + cand.vocab_random + cand.policy > cand.num_candidates:
        share = max(args.candidates // 8, 0)
        cand = CandidateConfig(num_candidates=args.candidates, vocab_near=share, vocab_random=share, policy=share)
    m = build_dataset(args.split, args.out, num_scenes=args.num_scenes, start=args.start, candidates=cand,
                      seed=args.seed, policy=args.policy, backend=args.backend, workers=args.workers,
                      shard_size=args.shard_size, progress=not args.no_progress)
    rows = sum(s["rows"] for s in m["shards"])
    skipped = sum(len(s["skipped"]) for s in m["shards"])
    print(f"rwm dataset: {args.out}: {len(m['shards'])} shards, {rows} labelled plans, {skipped} scenes skipped, "
          f"EP normaliser {m['ep_normaliser']}")
    return 0


def _train(args) -> int:
    from reward_models.model import ModelConfig
    from reward_models.train import TrainConfig, train

    cfg = TrainConfig(epochs=args.epochs, batch_scenes=args.batch_scenes, lr=args.lr, irl_weight=args.irl_weight,
                      rank_weight=args.rank_weight, reward_weight=args.reward_weight, seed=args.seed,
                      patience=args.patience, max_minutes=args.max_minutes, ema=args.ema,
                      overrate_weight=args.overrate_weight)
    given = {"d_model": args.d_model, "hidden": args.hidden, "heads": args.heads, "bev_samples": args.bev_samples,
             "bev_tokens": args.bev_tokens, "agent_forecast": args.agent_forecast, "activation": args.activation}
    model_cfg = ModelConfig(**{k: v for k, v in given.items() if v is not None})
    summary = train(args.data, args.out, cfg, model_cfg, val_dir=args.val_data, max_scenes=args.max_scenes,
                    progress=not args.no_progress)
    print(f"rwm train: {args.out}: {summary['epochs_done']} epochs, {summary['steps']} steps, best validation loss "
          f"{summary['best_val_loss']:.4f}")
    return 0


def _eval(args) -> int:
    from reward_models.evaluate import evaluate

    rep = evaluate(args.ckpt, args.out, split=args.split, data=args.data, num_scenes=args.num_scenes,
                   seed=args.seed, workers=args.workers, speed_scenes=args.speed_scenes,
                   progress=not args.no_progress, compare=args.compare)
    s = rep["best_of_k"]
    print(json.dumps({"spearman": round(rep["spearman"], 4), "pearson": round(rep["pearson"], 4),
                      "best_of_k_gap": round(s["gap"], 4), "rwm_pick": round(s["rwm_pick"], 4),
                      "oracle_pick": round(s["oracle_pick"], 4), "expert": round(s["expert"], 4),
                      "speed_ratio_cached": round(rep.get("speed", {}).get("ratio_cached", float("nan")), 1),
                      "speed_ratio": round(rep.get("speed", {}).get("ratio_model", float("nan")), 1)}))
    print(f"rwm eval: report in {args.out}/report.md")
    return 0


def _forecast(args) -> int:
    from reward_models.forecast import forecast_errors

    res = forecast_errors(args.split, args.scenes)
    print(f"moving agents of {args.scenes} {args.split} scenes (errors in m)\n")
    print("| forecast | agents | ADE | FDE (4 s) | lateral at 4 s | longitudinal at 4 s | lateral > 1 m |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in res.items():
        print(f"| {kind} | {r['agents']} | {r['ade']:.2f} | {r['fde']:.2f} | {r['lateral_4s']:.2f} | "
              f"{r['longitudinal_4s']:.2f} | {r['lateral_over_1m']:.3f} |")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("rwm", help="reward world model: dataset, train, eval",
                              description=__doc__)
    sub = p.add_subparsers(dest="rwm_command", metavar="SUBCOMMAND")
    sub.required = True

    d = sub.add_parser("dataset", help="label candidate plans with the scorer (resumable)")
    d.add_argument("--split", default="synthetic-train", help="synthetic split name or scene-store directory")
    d.add_argument("--out", required=True)
    d.add_argument("--num-scenes", type=int, default=None)
    d.add_argument("--start", type=int, default=0, help="first scene index")
    d.add_argument("--candidates", type=int, default=64, help="K candidate plans per scene (plus the expert)")
    d.add_argument("--policy", default=None, help="policy checkpoint or module:callable for policy samples")
    d.add_argument("--backend", choices=("local", "ray"), default="local")
    d.add_argument("--workers", type=int, default=1)
    d.add_argument("--shard-size", type=int, default=32, help="scenes per shard")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_dataset)

    t = sub.add_parser("train", help="train the RWM (supervised + MaxEnt IRL; resumable)")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True, help="checkpoint directory")
    t.add_argument("--val-data", default=None, help="validation dataset (default: last 10%% of --data scenes)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-scenes", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--irl-weight", type=float, default=0.1, help="weight of the MaxEnt IRL term")
    t.add_argument("--rank-weight", type=float, default=0.5, help="weight of the listwise ranking term")
    t.add_argument("--reward-weight", type=float, default=2.0, help="weight of the reward-vs-EPDMS squared error")
    t.add_argument("--d-model", type=int, default=None, help="token width (default: ModelConfig's)")
    t.add_argument("--hidden", type=int, default=None, help="plan-embedding width (default: ModelConfig's)")
    t.add_argument("--heads", type=int, default=None, help="attention heads (default: ModelConfig's)")
    t.add_argument("--bev-samples", choices=("full", "extrema"), default=None,
                   help="BEV samples per plan pose: all 70, or their per-channel max/min over the ego box (28)")
    t.add_argument("--bev-tokens", type=int, choices=(16, 64), default=None, help="BEV scene tokens")
    t.add_argument("--activation", choices=("gelu", "relu"), default=None, help="hidden-layer activation")
    t.add_argument("--agent-forecast", choices=("cv", "lane"), default=None,
                   help="agent forecast of the plan features: constant velocity or lane following")
    t.add_argument("--patience", type=int, default=4)
    t.add_argument("--overrate-weight", type=float, default=0.0,
                   help="extra weight of the squared reward error where the model over-rates a plan (pessimism)")
    t.add_argument("--ema", type=float, default=0.0,
                   help="decay of an exponential moving average of the weights, validated and saved (0: off)")
    t.add_argument("--max-minutes", type=float, default=None, help="stop after this training time")
    t.add_argument("--max-scenes", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="fidelity report on a held-out split")
    e.add_argument("--ckpt", required=True, help="checkpoint directory or shipped name ('default', 'policy_aware')")
    e.add_argument("--split", default="synthetic-test")
    e.add_argument("--out", required=True)
    e.add_argument("--data", default=None, help="an existing RWM dataset of the split (else built in OUT/data)")
    e.add_argument("--num-scenes", type=int, default=300)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("--speed-scenes", type=int, default=5)
    e.add_argument("--compare", default=None, help="another checkpoint: paired best-of-K comparison on the same scenes")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_eval)

    f = sub.add_parser("forecast", help="agent forecast errors (constant velocity / lane following) vs logged futures")
    f.add_argument("--split", default="synthetic-val")
    f.add_argument("--scenes", type=int, default=100)
    f.set_defaults(func=_forecast)
