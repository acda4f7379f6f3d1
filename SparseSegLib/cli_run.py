"""``sparseseg run``: single-scan jobs from the command line (create, run, resume, continue), as the module runs them.

Kept apart from :mod:`SparseSegLib.cli` (the parser and the cohort commands) so each stays small; the job
protocol itself is :mod:`SparseSegLib.jobs`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import SparseSegError


def _parse_boxes(text: str | None) -> list:
    if not text:
        raise SparseSegError("--region boxes needs --boxes", 'E.g. --boxes \'[{"ijk": [[10, 10, 5], [30, 30, 12]]}]\'.')
    source = "--boxes"
    if not text.lstrip().startswith(("[", "{")):
        path = Path(text)
        if not path.is_file():
            raise SparseSegError(f"--boxes {text!r} is neither JSON nor an existing file", "Give a JSON list or a .json file.")
        text, source = path.read_text(), str(path)
    try:
        boxes = json.loads(text)
    except json.JSONDecodeError as error:
        raise SparseSegError(f"{source} is not valid JSON ({error.msg}, column {error.colno})",
                             'E.g. [{"ijk": [[10, 10, 5], [30, 30, 12]]}].') from None
    return [boxes] if isinstance(boxes, dict) else boxes


def cmd_run(args: argparse.Namespace) -> int:
    from .jobs.client import Job
    from .jobs.events import format_event
    from .jobs.layout import CANCEL_FILE, EXIT_FINISHED
    from .worker import run_job

    if args.continue_job:
        return _run_continuation(args)
    creating = any(v is not None for v in (args.image, args.annotation, args.out))
    creation_only = {"--region": args.region, "--axis": args.axis, "--boxes": args.boxes, "--method": args.method,
                     "--rounds": args.rounds, "--iterations-per-round": args.iterations_per_round,
                     "--reference": args.reference, "--network": args.network, "--budget": args.budget,
                     "--batch-size": args.batch_size, "--channel": args.channel,
                     "--device": args.device, "--seed": args.seed, "--option": args.options}
    if creating:
        if args.jobdir is not None or args.resume:
            raise SparseSegError("give either JOBDIR (with or without --resume) or --image/--annotation/--out, not both",
                                 "Create a job with --image --annotation --out; run an existing one with JOBDIR.")
        missing = [name for name, value in (("--image", args.image), ("--annotation", args.annotation), ("--out", args.out))
                   if value is None]
        if missing:
            raise SparseSegError(f"creating a job needs {', '.join(missing)}", "Give --image, --annotation and --out.")
        if args.region == "boxes":
            if args.axis is not None:
                raise SparseSegError("--axis applies to --region slices", "Leave out --axis with --region boxes.")
            region = {"kind": "boxes", "boxes": _parse_boxes(args.boxes)}
        else:
            if args.boxes is not None:
                raise SparseSegError("--boxes needs --region boxes", "Add --region boxes.")
            axis = args.axis or "auto"
            region = {"kind": "slices", "axis": axis if axis == "auto" else int(axis)}
        from .defaults import START_METHOD, start_parameters

        parameters = start_parameters() if args.method is None else {}  # Start's defaults, as the module runs them
        parameters |= {key: value for key, value in (("rounds", args.rounds), ("iterations_per_round", args.iterations_per_round),
                                                     ("network", args.network), ("budget", args.budget),
                                                     ("batch_size", args.batch_size)) if value is not None}
        if args.options:
            from .cli_options import parse_options

            parameters["method_options"] = {**parameters.get("method_options", {}), **parse_options(args.options)}
        from .methods import MethodOptions, get_method

        # a mistyped option or a network the method does not train stops here, before a job folder exists
        get_method(args.method or START_METHOD).check_options(MethodOptions(
            network=args.network or "2d", extra=parameters.get("method_options", {})))
        from .io import case_id_from_path

        image = _channel_image(args.image, args.channel, args.out)
        job = Job.create_from_files(args.out, image, args.annotation, args.method or START_METHOD, region=region,
                                    reference=args.reference, parameters=parameters, device=args.device or "auto",
                                    seed=0 if args.seed is None else args.seed,
                                    case_id=case_id_from_path(args.image))
        jobdir = job.directory
        print(f"created job {jobdir}", file=sys.stderr)
    else:
        if args.jobdir is None:
            raise SparseSegError("no job to run", "Give JOBDIR, or create a job with --image --annotation --out.")
        given = [name for name, value in creation_only.items() if value is not None]
        if given:
            raise SparseSegError(f"{', '.join(given)} only apply when creating a job with --out",
                                 "Edit JOBDIR/job.json to change an existing job.")
        jobdir = args.jobdir
    (Path(jobdir) / CANCEL_FILE).unlink(missing_ok=True)  # a CANCEL left by an earlier stop would end this run at once
    code = run_job(jobdir, resume=args.resume, echo=lambda event: print(format_event(event), file=sys.stderr, flush=True))
    if code == EXIT_FINISHED:
        print(f"job folder: {jobdir}")
    return code


def _run_continuation(args: argparse.Namespace) -> int:
    """``sparseseg run JOBDIR --continue --annotation CORRECTED``: create the next stage (see
    :mod:`.jobs.continuation`) and run it in this process, printing events as ``run`` does."""
    from .jobs.continuation import continue_from_annotation
    from .jobs.events import format_event
    from .jobs.layout import EXIT_FINISHED, last_complete_round
    from .worker import run_job

    if args.jobdir is None or args.annotation is None:
        raise SparseSegError("--continue needs JOBDIR and --annotation", "E.g. sparseseg run job --continue "
                                                                          "--annotation corrected.nrrd.")
    others = {"--resume": args.resume or None, "--image": args.image, "--region": args.region, "--boxes": args.boxes,
              "--method": args.method, "--iterations-per-round": args.iterations_per_round,
              "--reference": args.reference, "--network": args.network, "--budget": args.budget,
              "--batch-size": args.batch_size, "--device": args.device, "--seed": args.seed}
    given = [name for name, value in others.items() if value is not None]
    if given:
        raise SparseSegError(f"{', '.join(given)} cannot be combined with --continue",
                             "A continued stage keeps the job's image, method and settings; give --annotation, "
                             "--out, --rounds or --axis.")
    if args.rounds is not None and args.rounds < 1:
        raise SparseSegError(f"--rounds {args.rounds} adds no round", "Give --rounds 1 or more.")
    axis = None if args.axis in (None, "auto") else int(args.axis)
    job, correction = continue_from_annotation(args.jobdir, args.annotation, args.out, more_rounds=args.rounds, axis=axis)
    rounds = job.spec.parameters.get("rounds")
    if not correction.count:
        print(f"sparseseg: warning: {args.annotation} paints no slice that {args.jobdir} did not already have; the "
              "next stage goes on training on the same annotation", file=sys.stderr)
    elif rounds is None and args.rounds is not None:
        print("sparseseg: warning: --rounds is ignored: this job's method decides how many rounds it runs",
              file=sys.stderr)
    print(f"created job {job.directory}: {correction.describe()} become ground truth; "
          f"{'rounds decided by the method' if rounds is None else f'rounds up to {rounds}'}", file=sys.stderr)
    done = last_complete_round(job.directory)
    code = run_job(job.directory, resume=True, echo=lambda event: print(format_event(event), file=sys.stderr, flush=True))
    if code == EXIT_FINISHED and last_complete_round(job.directory) == done:
        print(f"sparseseg: warning: the method planned no round after round {done}, so the new slices were not "
              "trained on; the result is the earlier stage's", file=sys.stderr)
    if code == EXIT_FINISHED:
        print(f"job folder: {job.directory}")
    return code


def _channel_image(image: Path, channel: int | None, out: Path) -> Path:
    """``image`` itself, or its ``channel`` written into the new job folder (the worker reads one 3D volume)."""
    if channel is None:
        return image
    from .io import read_image, write_image
    from .jobs.layout import INPUTS_DIR, JOB_FILE

    if (Path(out) / JOB_FILE).exists():
        raise SparseSegError(f"{out} already holds a job", "Give a new folder, or resume the job that is there.")
    array, geometry = read_image(image, channel)
    return write_image(array, geometry, Path(out) / INPUTS_DIR / "image.nrrd")
