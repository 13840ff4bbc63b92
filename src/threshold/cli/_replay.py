"""``threshold replay``, ``threshold ablation spine``, and ``threshold runs stranded|migrate``
(added to the ``runs`` parser by ``add_runs_subcommands``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.errors import ConfigError, NondeterminismError, ThresholdError
from threshold.replay._ablation import AblationConfig, render_ablation, spine_ablation
from threshold.replay._agents import DEFAULT_AGENTS, agents_register, prompt_variants
from threshold.replay._engine import ReplaySpec, replay_runs
from threshold.replay._pinning import migrate_run, stranded_runs
from threshold.replay._report import divergence_report, render_report
from threshold.runtime import Runtime
from threshold.store import open_store


def _add_agents_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", action="append", metavar="MODULE:FUNCTION",
                        help="import path of a function that registers the agents on a "
                             f"runtime; repeat for several (default: {DEFAULT_AGENTS})")


def _add_policy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="FILE",
                        help="a policy file; its version is compared with the runs' pins and "
                             "the policy is passed to agents functions that take 'policy'")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser(
        "replay", help="replay runs against their journals, or under another model/prompt/"
                       "policy and report the divergence",
        description="Without --model or --prompt-version: deterministic replay with the "
                    "recorded proposals; exits 1 at the first nondeterministic run. With "
                    "them: divergence replay through the same verifiers (effects go to a "
                    "shadow ledger, nothing real is committed).")
    replay.add_argument("run_id", nargs="*", help="runs to replay (or --all)")
    replay.add_argument("--all", action="store_true", help="every run of the store")
    add_db_option(replay)
    add_json_option(replay)
    _add_agents_option(replay)
    replay.add_argument("--model", help="re-propose with this model spec (sim:v2, openai:NAME)")
    replay.add_argument("--base-url", help="base URL for openai: model specs")
    replay.add_argument("--prompt-version", metavar="V",
                        help="re-propose with the prompts at version V")
    replay.add_argument("--prompts", metavar="FILE",
                        help="YAML/JSON list of prompt versions (default: the agents "
                             "modules' PROMPTS)")
    _add_policy_option(replay)
    replay.add_argument("--fail-above", type=float, metavar="RATE",
                        help="exit 1 when the gated divergence rate is above RATE (CI gate)")
    replay.add_argument("--gate-on", choices=("changed", "any"), default="changed",
                        help="the rate --fail-above gates: runs whose commits or states "
                             "changed (default), or runs where anything diverged")
    replay.add_argument("--sim-seed", type=int, default=0,
                        help="seed of sim models the divergence replay builds")
    replay.add_argument("--full-engine", action="store_true",
                        help="deterministic replay: re-execute every run on the full runtime "
                             "instead of verifying it against its journal first")
    replay.set_defaults(handler=_replay)

    ablation = sub.add_parser("ablation", help="experiments on the runtime's architecture")
    ablation_sub = ablation.add_subparsers(dest="ablation_command", metavar="EXPERIMENT",
                                           required=True)
    spine = ablation_sub.add_parser(
        "spine", help="H_drift: P3 (wide proposal) vs P5 (narrow proposal) under a model "
                      "change, on real Telco customers")
    spine.add_argument("--customers", type=int, default=100)
    spine.add_argument("--models", default="sim:v1,sim:v2", metavar="A,B",
                       help="record under A, replay under B (default: %(default)s)")
    spine.add_argument("--seed", type=int, default=0)
    spine.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    spine.add_argument("--base-url", help="base URL for openai: model specs")
    add_json_option(spine)
    spine.set_defaults(handler=_ablation)


def add_runs_subcommands(
        runs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``stranded`` and ``migrate`` to the ``threshold runs`` parser."""
    stranded_parser = runs_sub.add_parser(
        "stranded", help="unfinished runs whose pinned versions can no longer be served")
    add_db_option(stranded_parser)
    add_json_option(stranded_parser)
    _add_agents_option(stranded_parser)
    _add_policy_option(stranded_parser)
    stranded_parser.set_defaults(handler=stranded)

    migrate_parser = runs_sub.add_parser(
        "migrate", help="move runs to another agent version on purpose (refused unless the "
                        "new definition replays their journal)")
    migrate_parser.add_argument("run_id", nargs="*")
    migrate_parser.add_argument("--all", action="store_true",
                                help="every run that `runs stranded` reports")
    migrate_parser.add_argument("--to-version", required=True, metavar="V")
    migrate_parser.add_argument("--model", help="pin this model spec instead")
    migrate_parser.add_argument("--as", dest="principal",
                                default=os.environ.get("USER", "cli"),
                                help="who migrates (journaled; default: $USER)")
    add_db_option(migrate_parser)
    add_json_option(migrate_parser)
    _add_agents_option(migrate_parser)
    _add_policy_option(migrate_parser)
    migrate_parser.set_defaults(handler=migrate)


def _targets(args: argparse.Namespace) -> list[str] | None:
    if args.all == bool(args.run_id):
        raise ConfigError("name run ids or pass --all (not both)")
    return None if args.all else list(args.run_id)


def _load_policy(args: argparse.Namespace) -> Any:
    if not getattr(args, "policy", None):
        return None
    from threshold.patterns.policy import load_policy

    return load_policy(args.policy)


def _replay(args: argparse.Namespace) -> int:
    run_ids = _targets(args)
    policy = _load_policy(args)
    register = agents_register(args.agents or [], policy=policy)
    prompts = {} if args.prompt_version is None else prompt_variants(
        args.prompt_version, path=args.prompts, agents=args.agents or [])
    spec = ReplaySpec(model=args.model, prompts=prompts,
                      policy_version=None if policy is None else policy.version,
                      sim_seed=args.sim_seed,
                      model_options={"base_url": args.base_url} if args.base_url else {})
    if spec.deterministic and policy is None:
        if args.fail_above is not None:
            raise ConfigError("--fail-above gates a divergence replay: add --model, "
                              "--prompt-version or --policy")
        return _deterministic(args, run_ids, register)

    async def go() -> int:
        store = open_store(args.db)
        try:
            outcomes = await replay_runs(store, run_ids, register, spec)
        finally:
            await store.close()
        report = divergence_report(outcomes, spec)
        print_json(report.to_dict()) if args.json else print(render_report(report))
        if args.fail_above is not None and not report.gate(args.fail_above, args.gate_on):
            rate = report.changed_rate if args.gate_on == "changed" else \
                report.divergence_rate
            print(f"threshold: divergence gate failed: {args.gate_on} rate {rate:.4f} > "
                  f"{args.fail_above}", file=sys.stderr)
            return 1
        return 0

    return run_async(go())


def _deterministic(args: argparse.Namespace, run_ids: list[str] | None, register: Any) -> int:
    async def go() -> list[tuple[str, NondeterminismError | None, str]]:
        store = open_store(args.db)
        try:
            outcomes = await replay_runs(store, run_ids, register, fast=not args.full_engine)
        finally:
            await store.close()
        return [(o.diff.run_id, o.nondeterminism(), o.path) for o in outcomes]

    results = run_async(go())
    bad = [(run_id, error) for run_id, error, _ in results if error is not None]
    fast = sum(1 for *_, path in results if path == "fast")
    if args.json:
        print_json({"mode": "deterministic", "runs": len(results),
                    "clean": len(results) - len(bad),
                    "paths": {"fast": fast, "full": len(results) - fast},
                    "nondeterministic": [{"run_id": r, "step": e.step, "replayed": e.expected,
                                          "recorded": e.recorded} for r, e in bad if e]})
    else:
        for run_id, error, _ in results:
            print(f"{run_id:<32} {'ok' if error is None else 'NONDETERMINISM'}")
            if error is not None:
                print(f"    {error}")
        print(f"{len(results) - len(bad)}/{len(results)} run(s) replayed clean ({fast} "
              f"verify-only, {len(results) - fast} full engine)")
    return 1 if bad else 0


def _ablation(args: argparse.Namespace) -> int:
    names = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if len(names) != 2:
        raise ConfigError(f"--models {args.models!r}: expected two specs, A,B")
    config = AblationConfig(customers=args.customers, models=(names[0], names[1]),
                            seed=args.seed, bootstrap=args.bootstrap,
                            model_options={"base_url": args.base_url} if args.base_url else None)
    result = run_async(spine_ablation(config))
    print_json(result) if args.json else print(render_ablation(result))
    return 0


def stranded(args: argparse.Namespace) -> int:
    """``threshold runs stranded``: report (never change) runs no deployment can serve."""
    policy = _load_policy(args)
    register = agents_register(args.agents or [], policy=policy)

    async def go() -> list[Any]:
        store = open_store(args.db)
        try:
            runtime = Runtime(store)
            register(runtime)
            return await stranded_runs(store, runtime, policy_version=None if policy is None
                                       else policy.version)
        finally:
            await store.close()

    found = run_async(go())
    if args.json:
        print_json([s.to_dict() for s in found])
        return 0
    for s in found:
        print(f"{s.run_id:<32} {s.agent}@{s.agent_version:<6} {s.status:<9} "
              f"{'; '.join(s.reasons)}")
    print(f"{len(found)} stranded run(s)")
    return 0


def migrate(args: argparse.Namespace) -> int:
    """``threshold runs migrate``: move runs to ``--to-version``; exit 1 if any is refused."""
    run_ids = _targets(args)
    policy = _load_policy(args)
    register = agents_register(args.agents or [], policy=policy)

    async def go() -> list[dict[str, Any]]:
        store = open_store(args.db)
        results: list[dict[str, Any]] = []
        try:
            targets = run_ids
            if targets is None:
                runtime = Runtime(store)
                register(runtime)
                targets = [s.run_id for s in await stranded_runs(store, runtime)]
            for run_id in targets:
                try:
                    moved = await migrate_run(store, run_id, register,
                                              to_version=args.to_version, model=args.model,
                                              principal=args.principal)
                    results.append({"run_id": run_id, "migrated": True, **moved.to_dict()})
                except ThresholdError as exc:
                    results.append({"run_id": run_id, "migrated": False, "error": str(exc)})
        finally:
            await store.close()
        return results

    results = run_async(go())
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['run_id']:<32} " + (
                f"migrated to {args.to_version} by {r['by']} "
                f"({r['replayed_steps']} journal steps replayed clean)"
                if r["migrated"] else f"REFUSED: {r['error']}"))
    return 0 if all(r["migrated"] for r in results) else 1
