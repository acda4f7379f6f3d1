"""Command line of the interactive benchmark (see the package doc): choose scans, play them, write the report.

``results.json`` is rewritten after every scan, so a stopped run keeps what it finished and ``--resume`` goes
on with the scans it lacks (a resumed run must use the same job settings: mixing two would make a meaningless
table). ``--jobs 2`` plays two scans at a time, each worker with ``--threads`` threads (default: the CPU
cores shared out); the benchmark's own process scores with one thread.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ...errors import SparseSegError
from ...jobs.atomic import atomic_write_json
from .next_slice import RULES
from .report import write_report
from .scans import DATA_ROOT, DEFAULT_DATASETS, DEV_SCANS, SPLITS, Scan, choose_scans, mni152_scan
from .user import PlaySettings, play_scan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m SparseSegLib.benchmarks.interactive",
        description="Play the Slicer module's user on real scans: paint the central slice, Start, correct one slice "
                    "at a time with Continue; score every round against the full reference, next to Fill between "
                    "slices and copy-the-slice.")
    parser.add_argument("--dataset", type=Path, action="append", default=None,
                        help="MSD-style folder with dataset.json (repeatable; default: left_atrium and hippocampus "
                             f"under {DATA_ROOT})")
    parser.add_argument("--cases", type=int, default=10,
                        help="scans per data set (default 10; 0 with --mni152: the template alone)")
    parser.add_argument("--split", choices=SPLITS, default="report",
                        help=f"dev: the first {DEV_SCANS} scans of each data set's seeded order (pick settings there); "
                             "report: the scans after them (default)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the scan order (default 0)")
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first N scans of the part (to play one part in two processes side by "
                             "side, each with its own --out; merge them with python -m "
                             "SparseSegLib.benchmarks.interactive.report)")
    parser.add_argument("--channel", help="the channel of multi-channel (4D) images, an index or a dataset.json "
                                          "modality name (default: the first listed, e.g. FLAIR of MSD's BrainTumour)")
    parser.add_argument("--mni152", nargs="?", const=DATA_ROOT / "mni152", type=Path, default=None, metavar="DIR",
                        help="also play the mni152 template's tissue map (grey / white matter) as a multi-class scan")
    parser.add_argument("--method", help="the job's method (default: the module's Start method, SparseSegLib.defaults)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option for the job (repeatable), as `sparseseg run --option`")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="a job.json parameter over the Start defaults (repeatable), e.g. rounds=3, "
                             "iterations_per_round=50")
    parser.add_argument("--next", choices=RULES, default="suggested",
                        help="the slice painted next: the method's suggestion (default) or the most wrong one (upper bound)")
    parser.add_argument("--slices", type=int, default=5, help="painted slices at the end, 1 + corrections (default 5)")
    parser.add_argument("--first-at", type=float, default=None, metavar="F",
                        help="paint the first slice at fraction F of the object's extent (0: its first slice, "
                             "1: its last; default: the central slice)")
    parser.add_argument("--axis", type=int, choices=(0, 1, 2), default=0,
                        help="the array axis the user paints across: 0 = k (default; axial on most scans), 1 = j, "
                             "2 = i (the other two views); corrections and the baselines use the same axis")
    parser.add_argument("--correct-axis", type=int, choices=(0, 1, 2), default=None,
                        help="the axis the corrections are painted across, for --next gap / worst (default: --axis): "
                             "a user who corrects in another view; the suggestion names its own axis")
    parser.add_argument("--continue-rounds", type=int, default=None,
                        help="rounds each Continue adds (default: the module's, 2; ignored where the method decides)")
    parser.add_argument("--device", default="auto", help="the job's device (default auto, as the module)")
    parser.add_argument("--jobs", type=int, default=1, help="scans played at a time (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads per worker (default: cores / --jobs)")
    parser.add_argument("--stage-timeout", type=float, default=3600.0, help="seconds before a stage is stopped (default 3600)")
    parser.add_argument("--out", type=Path, default=Path("bench-output/interactive"), help="output folder")
    parser.add_argument("--resume", action="store_true", help="keep the scans results.json has finished, play the rest")
    return parser


def job_settings(method: str | None, options: list[str], parameters: list[str]) -> tuple[str, dict, str]:
    """``(method, job.json parameters, where they come from)``: the module's Start defaults with the overrides,
    checked by the job schema and the method registry before any scan is played."""
    from ...cli_options import parse_options
    from ...defaults import START_METHOD, start_parameters
    from ...jobs.schema import make_job, validate_job
    from ...methods import METHODS

    chosen = dict(start_parameters())
    chosen.update(parse_options(parameters))
    if options:
        chosen["method_options"] = {**chosen.get("method_options", {}), **parse_options(options)}
    method = method or START_METHOD
    if method not in METHODS:
        raise SparseSegError(f"unknown method {method!r}", f"Known methods: {', '.join(sorted(METHODS))}.")
    validate_job(make_job(method, "image.nrrd", "annotation.nrrd", parameters=chosen))
    overridden = [f"--method {method}"] if method != START_METHOD else []
    overridden += [f"--parameter {p}" for p in parameters] + [f"--option {o}" for o in options]
    source = "the module's Start defaults" + (f" with {' '.join(overridden)}" if overridden else "")
    return method, chosen, source


def choose(args: argparse.Namespace) -> list[Scan]:
    folders = (args.dataset or [DATA_ROOT / name for name in DEFAULT_DATASETS]) if args.cases else []
    scans = [scan for folder in folders
             for scan in choose_scans(folder, args.split, args.cases + args.skip, args.split_seed, channel=args.channel)[args.skip:]]
    if args.mni152 is not None:
        scans.append(mni152_scan(args.mni152))
    keys = [scan.key for scan in scans]
    if len(set(keys)) != len(keys):
        raise SparseSegError("two data sets share a folder name", "Give data set folders with different names.")
    return scans


def _load_previous(path: Path, job: dict) -> dict:
    import json

    previous = json.loads(path.read_text())
    if previous.get("job", {}).get("method") != job["method"] or previous.get("job", {}).get("parameters") != job["parameters"]:
        raise SparseSegError(f"{path} was made with other job settings ({previous.get('job')})",
                             "Resume with the same --method / --option / --parameter, or give another --out.")
    return previous


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except SparseSegError as error:
        print(f"interactive benchmark: error: {error.one_line()}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from ...jobs.continuation import DEFAULT_MORE_ROUNDS

    if args.cases < 0 or args.slices < 1 or args.jobs < 1 or (args.cases == 0 and args.mni152 is None):
        raise SparseSegError("--cases, --slices and --jobs must be at least 1 (--cases 0 only with --mni152)",
                             "E.g. --cases 10 --slices 5 --jobs 2.")
    if args.first_at is not None and not 0.0 <= args.first_at <= 1.0:
        raise SparseSegError(f"--first-at {args.first_at:g} is not a fraction of the extent",
                             "Give a value from 0 (the object's first slice) to 1 (its last), e.g. --first-at 0.75.")
    method, parameters, source = job_settings(args.method, args.option, args.parameter)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    settings = PlaySettings(method=method, parameters=parameters, device=args.device, threads=threads,
                            slices=args.slices, first_at=args.first_at, axis=args.axis,
                            correct_axis=args.correct_axis, next_rule=args.next,
                            stage_timeout_s=args.stage_timeout,
                            continue_rounds=args.continue_rounds or DEFAULT_MORE_ROUNDS)
    scans = choose(args)
    job = {"method": method, "parameters": parameters, "device": args.device, "source": source}
    results_path = args.out / "results.json"
    results = _load_previous(results_path, job) if args.resume and results_path.is_file() else {"scans": {}}
    results.update(job=job, environment=environment(threads, args.jobs), config={
        "datasets": sorted({scan.dataset for scan in scans}), "cases": args.cases, "split": args.split,
        "split_seed": args.split_seed, "dev_scans": DEV_SCANS, "next": args.next, "slices": args.slices,
        "first_at": args.first_at, "axis": args.axis, "correct_axis": args.correct_axis,
        "continue_rounds": settings.continue_rounds, "jobs": args.jobs, "threads": threads,
        "scans": [scan.key for scan in scans],
        "command": "python -m SparseSegLib.benchmarks.interactive " + shlex.join(argv)})
    todo = [scan for scan in scans if results["scans"].get(scan.key, {}).get("status") != "done"]
    for scan in scans:
        if scan not in todo:
            print(f"[{scan.key}] done in {results_path}: skipped", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    _single_threaded_scoring()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(play_scan, scan, settings, args.out / "jobs" / scan.dataset / scan.case_id,
                               lambda text: print(text, flush=True)): scan for scan in todo}
        for future in as_completed(futures):
            scan = futures[future]
            try:
                results["scans"][scan.key] = future.result()
            except Exception as error:  # noqa: BLE001  (one broken scan must not end a run of hours)
                message = error.one_line() if isinstance(error, SparseSegError) else f"{type(error).__name__}: {error}"
                results["scans"][scan.key] = {**scan.describe(), "status": "error", "message": message, "stages": []}
                print(f"[{scan.key}] error: {message}", flush=True)
            atomic_write_json(results_path, results)
            write_report(results, args.out)
    report = write_report(results, args.out)
    print(f"played {len(todo)} scan(s) in {time.perf_counter() - started:.0f} s; wrote {results_path} and {report}")
    return 0


def _single_threaded_scoring() -> None:
    """The metrics run torch/MONAI in this process: one thread, so the workers keep the cores."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def environment(threads: int, jobs: int) -> dict:
    import platform
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch": version("torch"), "monai": version("monai"), "itk": version("itk-morphologicalcontourinterpolation"),
            "threads_per_worker": threads, "jobs": jobs}
