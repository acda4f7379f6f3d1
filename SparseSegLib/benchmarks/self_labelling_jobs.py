"""Self-labelling as the Slicer user runs it: a worker job on one volume, one annotated slice, no cohort.

    python -m SparseSegLib.benchmarks.self_labelling_jobs --out bench-output/sl_jobs [options]

A job (`sparseseg run`, the Slicer module's Start) trains on its own volume only: one run of the 2D networks, no
validation part (the training loss is monitored), no ensemble and no 3D student, streaming a full prediction after
every round. The cohort benchmark (`sparseseg bench`) cannot say how well that works, nor whether settings chosen
on cohorts suit it (theta 0.6 was chosen for co-labelled ensembles; a job labels with one network, at
``solo_theta`` 0.7). This runs the method's own job path
(``run_rounds``, what the worker calls) on the first ``--volumes`` test volumes of the hippocampus bench split,
once per ``--variant``, and scores every streamed round against the full label (merged foreground, as the
cohort bench). Variants run side by side on each volume, so their ratios share the machine's noise.

Rounds: by default as many as the volume needs to be fully labelled plus the fusion passes (what ``sparseseg run``
without ``--rounds`` cannot know); the Dice after round 5 (the module's default number of rounds) is reported too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..annotation import annotate_case
from ..case import Case
from ..cli_options import parse_options
from ..dataset import load_dataset, split_cases
from ..jobs.atomic import atomic_write_text
from ..methods import MethodOptions, get_method
from ..methods.self_labelling import natural_rounds
from ..metrics import case_metrics
from ..progress import TerminalReporter, format_duration
from .gradual import environment

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "hippocampus"
#: The Slicer module's default number of rounds (SparseSeg/SparseSeg.py).
MODULE_ROUNDS = 5


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` (``NAME:`` alone: the method's defaults) -> (name, method_options), values
    read as ``--option`` reads them."""
    name, _, rest = text.partition(":")
    return name or "default", parse_options([item for item in rest.split(",") if item])


def job_rounds(case: Case, method, options: MethodOptions) -> int:
    """Rounds until every slice is labelled, plus the fusion passes: what a cohort run takes by itself."""
    return natural_rounds([case.annotated.reshape(case.annotated.shape[0], -1).any(1)], method.job_settings(options))


def dice_after(job: dict, index: int) -> float:
    """The job's Dice after round ``index`` (after its last round when it ran fewer)."""
    return job["dice"][min(index, job["rounds"]) - 1]


def run_job(case: Case, method, options: MethodOptions, reporter) -> dict:
    """One job on ``case``: merged Dice of every streamed round, and the wall time."""
    started, curve = time.perf_counter(), []
    for result in method.run_rounds([case], options, reporter):
        label = result.labels[case.case_id]
        scores = case_metrics(label, case.label, case.geometry.spacing_kji, case.class_names)
        curve.append(round(float(scores["merged"]["dice"]), 4))
    return {"case": case.case_id, "rounds": len(curve), "dice": curve, "seconds": round(time.perf_counter() - started, 1)}


def summarise(jobs: list[dict]) -> dict:
    final = np.array([job["dice"][-1] for job in jobs])
    early = np.array([dice_after(job, MODULE_ROUNDS) for job in jobs])
    return {"n": len(jobs), "final_mean": float(final.mean()), "final_sd": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "round5_mean": float(early.mean()), "seconds_mean": float(np.mean([job["seconds"] for job in jobs])),
            "rounds_mean": float(np.mean([job["rounds"] for job in jobs]))}


def write_report(data: dict, out: Path) -> None:
    lines = [f"# Self-labelling worker jobs on {data['config']['dataset']}", "",
             f"{data['config']['volumes']} test volumes of the 70/15/15 split seed {data['config']['split_seed']}, "
             f"central slice annotated, budget {data['config']['budget']}, one job per volume and variant; "
             "merged Dice against the full label.", "",
             "| variant | method_options | theta used | Dice after round 5 (or the last) | Dice at the end (mean ± sd) | rounds | s per job |",
             "|---|---|---|---|---|---|---|"]
    for name, variant in data["variants"].items():
        if variant["jobs"]:
            s = summarise(variant["jobs"])
            lines.append(f"| {name} | `{json.dumps(variant['options'])}` | {variant['theta']:g} | {s['round5_mean']:.3f} | "
                         f"{s['final_mean']:.3f} ± {s['final_sd']:.3f} | {s['rounds_mean']:.1f} | {s['seconds_mean']:.0f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--volumes", type=int, default=10, help="test volumes of the bench split (default 10)")
    parser.add_argument("--start", type=int, default=0, help="the first test volume's index (parallel runs take other volumes)")
    parser.add_argument("--method", default="self-labelling")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME:key=value,... method_options of one variant (repeatable; default: "
                             "'default:' (a job's theta 0.7) and 'theta06:theta=0.6' (the co-labelled cohorts' theta))")
    parser.add_argument("--budget", default="quick", help="quick (the module's default) or paper")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per job (0: every slice labelled + fusion)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="training seed of every job")
    parser.add_argument("--out", type=Path, default=Path("bench-output/sl_jobs"))
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or ["default:", "theta06:theta=0.6"])]
    dataset = load_dataset(args.dataset)
    part = split_cases([r.case_id for r in dataset.cases], (0.7, 0.15, 0.15), args.split_seed)
    records = {r.case_id: r for r in dataset.cases}
    method = get_method(args.method)
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"config": {"dataset": str(args.dataset), "volumes": args.volumes, "start": args.start, "method": args.method, "budget": args.budget,
                       "rounds": args.rounds, "split_seed": args.split_seed, "seed": args.seed},
            "variants": {name: {"options": options, "jobs": [],
                                "theta": method.job_settings(MethodOptions(budget=args.budget, extra=options)).theta}
                         for name, options in variants},
            "environment": environment()}
    reporter = TerminalReporter()
    started = time.perf_counter()
    for case_id in part["test"][args.start: args.start + args.volumes]:
        case = annotate_case(dataset.load(records[case_id]), "central-slice", args.split_seed)
        for name, extra in variants:
            options = MethodOptions(network="2d", budget=args.budget, device="cpu", seed=args.seed, extra=extra)
            options.rounds = args.rounds or job_rounds(case, method, options)
            job = run_job(case, method, options, reporter)
            data["variants"][name]["jobs"].append(job)
            print(f"{case_id} {name}: Dice {job['dice'][-1]:.3f} after {job['rounds']} rounds "
                  f"(round {MODULE_ROUNDS}: {dice_after(job, MODULE_ROUNDS):.3f}), {job['seconds']:.0f} s",
                  flush=True)
        # rewritten after every volume, atomically: a stopped run keeps what it finished, never half a file
        atomic_write_text(args.out / "results.json", json.dumps(data, indent=1), sync=False)
        write_report(data, args.out)
    for name, variant in data["variants"].items():
        s = summarise(variant["jobs"])
        print(f"{name} {variant['options']}: Dice {s['final_mean']:.3f} ± {s['final_sd']:.3f} at the end, "
              f"{s['round5_mean']:.3f} after round {MODULE_ROUNDS}; {s['seconds_mean']:.0f} s per job")
    print(f"wrote {args.out}/results.json and report.md in {format_duration(time.perf_counter() - started)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
