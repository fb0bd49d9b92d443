"""``irlvla check-scorer``: the scorer's sanity check on real samples (:mod:`irlvla_gym.evaluation.real_data`) and,
with ``--navsim``, the differential check against the official NAVSIM scorer (:mod:`irlvla_gym.evaluation.navsim_diff`).
The command line lives here so that neither of those modules imports the other."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from irlvla_gym.evaluation.real_data import (
    PLANNER_NAMES, SOURCE_DIRS, SOURCES, default_data_dir, format_table, iter_real_scenes, missing_sources, run_check,
)


def register(subparsers) -> None:
    """Add ``irlvla check-scorer``."""
    p = subparsers.add_parser(
        "check-scorer", help="score the human, constant-velocity and PDM-Closed plans on the real samples",
        description=__doc__.split("\n\n")[0] + " Prints mean EPDMS, PDMS and sub-scores per source.")
    p.add_argument("--data", type=Path, default=None,
                   help="folder holding the real samples: " + ", ".join(f"{d}/" for d in SOURCE_DIRS.values())
                        + " and nuscenes_drivable_areas/ (default ../shared/data); missing sources are left out")
    p.add_argument("--stride", type=int, default=1, help="take every stride-th 0.5 s window (default 1)")
    p.add_argument("--planners", default=",".join(PLANNER_NAMES),
                   help=f"comma-separated subset of {','.join(PLANNER_NAMES)}")
    p.add_argument("--filter", nargs="?", const="on", default=None, choices=("on", "off", "both"),
                   help="human false-positive filter: without --navsim, a bare --filter (or 'on') applies it to the "
                        "non-human planners (default off); with --navsim, on|off|both (default both)")
    p.add_argument("--traffic", choices=("log", "idm"), default="log", help="agents: log replay or reactive IDM")
    p.add_argument("--default-speed-limit", type=float, default=15.0,
                   help="PDM-Closed target speed (m/s) on lanes without a limit (NAVSIM 15; the samples have none)")
    p.add_argument("--pdm-forecast", choices=("constant_velocity", "log"), default="constant_velocity",
                   help="agents PDM-Closed sees: constant-velocity forecast of t0 (NAVSIM, default) or the "
                        "log-replayed future (oracle)")
    p.add_argument("--sources", default=None,
                   help=f"comma-separated subset of {','.join(SOURCES)} (default all; a source without its sample "
                        "folder is left out with a note); with --navsim the subset may also name synthetic")
    p.add_argument("--json", action="store_true", help="print the result (table and per-scene rows) as JSON")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the JSON result to this file (atomically); with --navsim: a folder that keeps "
                        "the exports, both score files and report.json")
    p.add_argument("--explain", action="store_true", help="print the scorer's reasons for every imperfect plan")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "differential check against the official NAVSIM scorer (--navsim; see irlvla_gym/evaluation/navsim_diff.py)")
    g.add_argument("--navsim", action="store_true",
                   help="export scenes to NAVSIM format, score a fixed plan set with the project and with NAVSIM's "
                        "own scorer (run by --navsim-python), print the agreement per sub-score")
    g.add_argument("--navsim-python", default=None,
                   help="python of an environment with navsim + nuplan-devkit (default $IRLVLA_NAVSIM_PYTHON); "
                        "without one the check is skipped (exit 0)")
    g.add_argument("--scenes", type=int, default=None,
                   help="scenes per source: synthetic-test scenes balanced over the layouts (default 40) and evenly "
                        "spaced real windows (default all)")
    g.add_argument("--max-disagreements", type=int, default=30,
                   help="disagreements listed per source (default 30)")
    g.add_argument("--navsim-shims", action="store_true",
                   help="WORKAROUND for exports of older project versions only: alias numpy._core for NAVSIM's "
                        "numpy 1.x and give nuPlan a four-city maps json (default off)")
    p.set_defaults(func=_main)


def parse_sources(value: str | None) -> tuple[str, ...]:
    """``--sources`` without ``--navsim``: a comma-separated subset of the real sources (None: all of them)."""
    if value is None:
        return SOURCES
    sources = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"--sources {value!r}: unknown or no real source(s) {unknown}; choose from "
                         f"{','.join(SOURCES)} (synthetic only with --navsim)")
    return sources


def _main(args: argparse.Namespace) -> int:
    from irlvla_gym.evaluation.io import atomic_write_text

    if args.navsim:
        from irlvla_gym.evaluation.navsim_diff import main_navsim

        return main_navsim(args)
    if args.filter == "both":
        raise ValueError("--filter both needs --navsim")
    data = args.data if args.data is not None else default_data_dir()
    planners = [p.strip() for p in args.planners.split(",") if p.strip()]
    sources = parse_sources(args.sources)
    scenes = list(iter_real_scenes(data, stride=args.stride, sources=sources))
    missing = missing_sources(data, sources)
    if missing:  # the others were found (else iter_real_scenes raised): left out, but said
        print(f"check-scorer: left out (no sample folder under {data}): "
              + ", ".join(f"{s} ({SOURCE_DIRS[s]}/)" for s in missing), file=sys.stderr)
    if not scenes:
        raise ValueError(f"{data}: no scene could be converted")
    result = run_check(scenes, planners=planners, human_filter=args.filter == "on", traffic=args.traffic,
                       progress=not args.no_progress, default_speed_limit=args.default_speed_limit,
                       agent_forecast=args.pdm_forecast)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result.to_json(), indent=1))
    if args.json:
        print(json.dumps({k: v for k, v in result.to_json().items() if k != "rows"}, indent=1))
    else:
        if args.explain:
            for r in result.rows:
                if "explain" in r:
                    print(f"{r['token']} [{r['planner']}]\n{r['explain']}")
        print(format_table(result))
        print(f"(human scored with the filter off; others with the filter {'on' if args.filter == 'on' else 'off'}; "
              f"traffic {args.traffic}; EP normalised by PDM-Closed)")
    return 0
