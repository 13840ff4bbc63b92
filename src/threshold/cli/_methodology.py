"""``threshold select`` and ``threshold workloads``: the paper's methodology tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from threshold.cli._common import add_json_option, print_json
from threshold.errors import ConfigError, NotFoundError
from threshold.methodology import (
    Workload,
    builtin_workloads,
    load_builtin,
    load_workload,
    render_skeleton,
    select,
)

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    select_parser = subparsers.add_parser(
        "select",
        help="choose the runtime patterns for a workload (the paper's five steps)",
        description="Classify the runtime, choose the state spine, wrap with coordination, "
        "bound with control, sequence the build; inventory every LLM-to-action boundary.",
    )
    select_parser.add_argument("workload", metavar="FILE_OR_NAME",
                               help="a workload YAML file or a built-in workload name")
    add_json_option(select_parser)
    select_parser.add_argument("--skeleton", metavar="PATH", type=Path,
                               help="also write a Python skeleton of the composition to PATH")
    select_parser.set_defaults(handler=_select)

    workloads = subparsers.add_parser("workloads", help="the built-in workload descriptions")
    workloads_sub = workloads.add_subparsers(dest="workloads_command", metavar="ACTION")
    workloads.set_defaults(handler=lambda _args: _usage(workloads))
    listing = workloads_sub.add_parser("list", help="list the built-in workloads")
    add_json_option(listing)
    listing.set_defaults(handler=_list)
    show = workloads_sub.add_parser("show", help="print one workload, normalised")
    show.add_argument("name", metavar="FILE_OR_NAME")
    add_json_option(show)
    show.set_defaults(handler=_show)

    # --- `threshold diagnose` and `threshold reliability` register here ------------------
    # (they belong to this module because they share the methodology package).
    from threshold.cli._diagnostics import register_diagnose, register_reliability

    register_diagnose(subparsers)
    register_reliability(subparsers)


def resolve_workload(reference: str) -> Workload:
    """A path if it names a file or looks like one, else a built-in workload name."""
    path = Path(reference)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return load_workload(path)
    try:
        return load_builtin(reference)
    except NotFoundError as exc:
        raise NotFoundError(f"{reference!r} is not a file, and {exc}") from None


def _select(args: argparse.Namespace) -> int:
    selection = select(resolve_workload(args.workload))
    if args.skeleton is not None:
        try:
            args.skeleton.write_text(render_skeleton(selection), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the skeleton to {args.skeleton}: {exc}") from None
        # Keep stdout a single document when --json is given.
        note = sys.stderr if args.json else sys.stdout
        print(f"skeleton written to {args.skeleton}", file=note)
    if args.json:
        print_json(selection.to_dict())
    else:
        print(selection.render_text())
    return 0


def _summary(workload: Workload) -> dict[str, Any]:
    runtime = select(workload).runtime_class
    return {"name": workload.name, "runtime_class": runtime,
            "description": " ".join(workload.description.split())}


def _list(args: argparse.Namespace) -> int:
    summaries = [_summary(w) for w in builtin_workloads()]
    if args.json:
        print_json({"workloads": summaries})
        return 0
    width = max((len(s["name"]) for s in summaries), default=0)
    for s in summaries:
        first = s["description"].split(". ")[0].rstrip(".")
        first = first if len(first) <= 64 else first[:63].rstrip() + "…"
        print(f"{s['name']:<{width}}  {s['runtime_class']:<14}  {first}")
    return 0


def _show(args: argparse.Namespace) -> int:
    data = resolve_workload(args.name).model_dump(mode="json")
    if args.json:
        print_json(data)
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=96), end="")
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
