"""``irlvla rwm``: build the RWM dataset, train the model, evaluate it (``dataset`` / ``train`` / ``eval``), and the
real-data commands (``loso`` / ``eval-real``, :mod:`reward_models.real`) and ``greedy-plans``
(:mod:`reward_models.greedy`).

The flags of ``dataset`` / ``train`` / ``eval`` / ``loso`` / ``eval-real`` are the fields of
:class:`reward_models.dataset.DatasetConfig`, :class:`reward_models.train.TrainRunConfig`,
:class:`reward_models.evaluate.EvalConfig`, :class:`reward_models.real.LosoConfig` and
:class:`reward_models.real.EvalRealConfig` (:mod:`irlvla_gym.configs`); each command runs the typed entry point of its
config (``run_dataset`` / ``run_train`` / ``run_eval`` / ``train_loso`` / ``run_eval_real``)."""

from __future__ import annotations

import json

from irlvla_gym.configs import add_arguments, from_args
from reward_models.dataset import DatasetConfig, run_dataset
from reward_models.evaluate import EvalConfig, run_eval
from reward_models.greedy import GreedyPlansConfig, run_greedy_plans
from reward_models.real import EvalRealConfig, LosoConfig, run_eval_real, train_loso
from reward_models.train import TrainRunConfig, run_train


def _dataset(args) -> int:
    cfg = from_args(DatasetConfig, args)
    m = run_dataset(cfg)
    rows = sum(s["rows"] for s in m["shards"])
    skipped = sum(len(s["skipped"]) for s in m["shards"])
    print(f"rwm dataset: {cfg.out}: {len(m['shards'])} shards, {rows} labelled plans, {skipped} scenes skipped, "
          f"EP normaliser {m['ep_normaliser']}")
    return 0


def _train(args) -> int:
    cfg = from_args(TrainRunConfig, args)
    summary = run_train(cfg)
    print(f"rwm train: {cfg.out}: {summary['epochs_done']} epochs, {summary['steps']} steps, best validation loss "
          f"{summary['best_val_loss']:.4f}")
    return 0


def _eval(args) -> int:
    cfg = from_args(EvalConfig, args)
    rep = run_eval(cfg)
    s = rep["best_of_k"]
    print(json.dumps({"spearman": round(rep["spearman"], 4), "pearson": round(rep["pearson"], 4),
                      "best_of_k_gap": round(s["gap"], 4), "rwm_pick": round(s["rwm_pick"], 4),
                      "oracle_pick": round(s["oracle_pick"], 4), "expert": round(s["expert"], 4),
                      "speed_ratio_cached": round(rep.get("speed", {}).get("ratio_cached", float("nan")), 1),
                      "speed_ratio": round(rep.get("speed", {}).get("ratio_model", float("nan")), 1)}))
    print(f"rwm eval: report in {cfg.out}/report.md")
    return 0


def _loso(args) -> int:
    cfg = from_args(LosoConfig, args)
    for name, path in train_loso(cfg).items():
        print(f"rwm loso: {name}: {path}")
    return 0


def _eval_real(args) -> int:
    cfg = from_args(EvalRealConfig, args)
    table, _ = run_eval_real(cfg)
    print(table)
    if cfg.out:
        print(f"rwm eval-real: table in {cfg.out}/table.md")
    return 0


def _greedy_plans(args) -> int:
    cfg = from_args(GreedyPlansConfig, args)
    picks = run_greedy_plans(cfg)
    print(f"rwm greedy-plans: {picks.summary()}; wrote {cfg.out}")
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

    commands = (  # (name, help, config dataclass whose fields are the flags, handler)
        ("dataset", "label candidate plans with the scorer (resumable)", DatasetConfig, _dataset),
        ("train", "train the RWM (supervised + MaxEnt IRL; resumable)", TrainRunConfig, _train),
        ("eval", "fidelity report on a held-out split", EvalConfig, _eval),
        ("loso", "leave-one-source-out training on synthetic scenes + real windows", LosoConfig, _loso),
        ("eval-real", "synthetic and real fidelity side by side, bootstrap intervals", EvalRealConfig, _eval_real),
        ("greedy-plans", "the reward's greedy picks around a policy's plans, as a plan file (targets of irlvla bc)",
         GreedyPlansConfig, _greedy_plans),
    )
    for name, help_text, config_cls, handler in commands:
        parser = sub.add_parser(name, help=help_text)
        add_arguments(parser, config_cls)
        parser.set_defaults(func=handler)

    f = sub.add_parser("forecast", help="agent forecast errors (constant velocity / lane following) vs logged futures")
    f.add_argument("--split", default="synthetic-val")
    f.add_argument("--scenes", type=int, default=100)
    f.set_defaults(func=_forecast)
