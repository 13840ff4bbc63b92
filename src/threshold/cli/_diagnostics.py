"""``threshold diagnose`` and ``threshold reliability simulate|estimate``.

Registered by ``threshold.cli._methodology``; thin shells over ``threshold.methodology``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.errors import ConfigError
from threshold.methodology import (
    COMPOSITIONS,
    SimConfig,
    diagnose,
    estimate_reliability,
    plot_estimate,
    plot_simulation,
    simulate,
)
from threshold.methodology._montecarlo import DEFAULT_RATES
from threshold.methodology._separation import render_text
from threshold.store import open_store

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register_diagnose(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "diagnose", help="find failure signatures in journals (exit 1 when any)",
        description="Read the journal (runs, crossings, verdicts, effects, timers, approvals, "
        "events) and report failure signatures with their cause, correction and pattern.")
    add_db_option(parser)
    parser.add_argument("--run", dest="run_id", help="diagnose one run only")
    add_json_option(parser)
    parser.set_defaults(handler=_diagnose)


def register_reliability(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "reliability", help="the decomposition y(t) = mu t + sigma xi(t)",
        description="Estimate mu and sigma from a journal, or simulate them with the runtime "
        "across model error rates, pattern compositions and boundary strengths.")
    actions = parser.add_subparsers(dest="reliability_command", metavar="ACTION",
                                    required=True)
    est = actions.add_parser("estimate", help="mu and sigma from a store's journal")
    add_db_option(est)
    est.add_argument("--run", dest="run_id", help="one run only")
    est.add_argument("--confidence", type=float, default=0.95)
    _common(est)
    est.set_defaults(handler=_estimate)
    sim = actions.add_parser("simulate", help="Monte Carlo with the runtime itself")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--runs", type=int, default=40, help="runs per grid cell")
    sim.add_argument("--crossings", type=int, default=5, help="crossings per run")
    sim.add_argument("--rates", type=_rates, default=DEFAULT_RATES,
                     help="model error rates, comma separated (default: %(default)s)")
    sim.add_argument("--compositions", type=_names, default=tuple(COMPOSITIONS),
                     help="comma separated, from: " + ", ".join(COMPOSITIONS))
    sim.add_argument("--exception-rate", type=float, default=0.1,
                     help="share of customers whose right offer needs a human's sign-off")
    _common(sim)
    sim.set_defaults(handler=_simulate)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG plot to FILE")
    add_json_option(parser)


def _rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _diagnose(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            result = await diagnose(store, run_id=args.run_id)
        finally:
            await store.close()
        if args.json:
            print_json(result.to_dict())
        else:
            print(result.render_text())
        return 0 if result.clean else 1

    return run_async(go())


def _estimate(args: argparse.Namespace) -> int:
    if not 0 < args.confidence < 1:
        raise ConfigError(f"--confidence must be between 0 and 1, not {args.confidence}")

    async def go() -> int:
        store = open_store(args.db)
        try:
            report = await estimate_reliability(store, run_id=args.run_id,
                                                confidence=args.confidence)
        finally:
            await store.close()
        if args.plot is not None:
            _note(f"plot written to {plot_estimate(report, args.plot)}", args.json)
        if args.json:
            print_json(report.to_dict())
        else:
            print(report.render_text())
        return 0

    return run_async(go())


def _simulate(args: argparse.Namespace) -> int:
    config = SimConfig(rates=args.rates, compositions=args.compositions, runs=args.runs,
                       crossings=args.crossings, seed=args.seed,
                       exception_rate=args.exception_rate)
    result = run_async(simulate(config))
    if args.plot is not None:
        _note(f"plot written to {plot_simulation(result, args.plot)}", args.json)
    if args.json:
        print_json(result.to_dict())
    else:
        print(render_text(result))
    return 0


def _note(text: str, json_output: bool) -> None:
    """Keep stdout one document when --json is given."""
    print(text, file=sys.stderr if json_output else sys.stdout)
