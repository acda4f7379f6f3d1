"""The ``sparseseg`` command line: train, predict, evaluate, bench and demo.

Errors the user can fix print as one line (``sparseseg: error: ...``) with exit code 2; nothing the
user did wrong ends in a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .cli_images import cmd_evaluate, cmd_predict
from .cli_options import parse_options, read_case_list
from .cli_run import cmd_run
from .errors import SparseSegError


EPILOG = """examples:
  sparseseg demo --out demo-output
  sparseseg train --dataset ../shared/data/hippocampus --out model   # collaborative, one central slice per scan
  sparseseg train --dataset my_painted_scans --annotation painted --out model   # from your own painted slices
  sparseseg predict --model model --input image.nii.gz --out predictions
  sparseseg evaluate --pred predictions --ref labelsTr --json scores.json
  sparseseg bench --dataset ../shared/data/hippocampus --annotation central-slice --methods sparse-only,full --out bench
  sparseseg run --image image.nrrd --annotation painted.seg.nrrd --out job   # what the module's Start runs
  sparseseg run --resume job
  sparseseg run job --continue --annotation corrected.nrrd --out job-stage-2

annotation specs: central-slice[:AXIS] | slices:N[:AXIS] | boxes:N:SIZE | full   (simulated from full labels)
  | painted[:AXIS]   (train only: labelsTr hold your own painted slices; each slice holding paint is annotated)
  (AXIS 0 = k, the slice stack, default; 1 = j; 2 = i)
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=int, default=0, help="seed for annotation simulation and training (default 0)")


def _add_training(parser: argparse.ArgumentParser, budget: str = "quick") -> None:
    parser.add_argument("--budget", default=budget, choices=["quick", "paper"],
                        help=f"quick: minutes on a CPU (a first look); paper: trains to convergence (default {budget})")
    parser.add_argument("--iterations", type=int, help="override the budget's number of training iterations")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", dest="options",
                        help="a method option (repeatable), e.g. --option fuse_axes=true --option theta=0.8; "
                             "the method lists the ones it knows when given an unknown one")
    parser.add_argument("--labelled", type=int, metavar="N",
                        help="semi-supervised setting: only N training volumes (seeded) keep their annotation, the "
                             "others are used unlabelled (methods that use unlabelled volumes: mean-teacher, ua-mt; "
                             "same as --option labelled=N)")
    parser.add_argument("--spacing", default="common", choices=["common", "native"],
                        help="common (default): training scans whose in-plane spacings differ by more than 10%% are "
                             "resampled in plane to their median (the slice axis kept); native: as they are")


def build_parser() -> argparse.ArgumentParser:
    from .defaults import TRAIN_BUDGET, TRAIN_METHOD
    from .distributed.run import add_arguments as add_distributed_arguments
    from .methods import METHODS

    parser = argparse.ArgumentParser(
        prog="sparseseg",
        description="Segment 3D medical scans from sparse annotation (one slice or a few boxes per volume).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sparseseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    method_help = "method: " + ", ".join(f"{name} ({cls.summary})" for name, cls in sorted(METHODS.items()))

    train = commands.add_parser("train", help="train a model on a dataset folder with simulated sparse annotation",
                                description="Train a model from an MSD-style dataset folder (dataset.json, imagesTr, labelsTr).")
    train.add_argument("--dataset", required=True, type=Path, help="folder with dataset.json")
    train.add_argument("--cases", type=Path, help="text file with the case ids to train on (one per line); default all")
    train.add_argument("--channel", help=CHANNEL_HELP)
    train.add_argument("--annotation", default="central-slice", help="sparse annotation spec (see below), default central-slice")
    train.add_argument("--method", default=TRAIN_METHOD,
                       help=method_help + f" (default {TRAIN_METHOD}: the best on the cohort benchmark's validation parts)")
    train.add_argument("--network", default="2d", choices=["2d", "3d"], help="network (default 2d)")
    train.add_argument("--out", required=True, type=Path, help="model folder to write (weights + config.json)")
    _add_training(train, TRAIN_BUDGET)
    _add_common(train)
    add_distributed_arguments(train)

    predict = commands.add_parser("predict", help="segment images with a trained model",
                                  description="Write one label map per image: same file name, format and geometry.")
    predict.add_argument("--model", required=True, type=Path,
                         help="model folder written by `sparseseg train` (or Save model), or a job folder of "
                              "`sparseseg run` / the module: its newest complete round's model")
    predict.add_argument("--input", required=True, type=Path, help="an image file, or a folder of image files")
    predict.add_argument("--out", required=True, type=Path, help="output folder")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    predict.add_argument("--channel", type=int, help="channel of multi-channel (4D) images (default: the one the model "
                                                     "was trained on)")

    evaluate = commands.add_parser("evaluate", help="score label maps against reference label maps",
                                   description="Match files by name in --pred and --ref and print a table per case + mean ± sd.")
    evaluate.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    evaluate.add_argument("--ref", required=True, type=Path, help="folder of reference label maps")
    evaluate.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    evaluate.add_argument("--classes", help="class names as 1=Anterior,2=Posterior (default: from a dataset.json "
                                            "next to --ref, else Class N)")

    bench = commands.add_parser("bench", help="benchmark methods on a real dataset (results.json, report.md, plots)",
                                description="Split the dataset (70/15/15 by default, or K folds), simulate the sparse "
                                            "annotation, train every method on every network and score the test part.")
    bench.add_argument("--dataset", required=True, type=Path, help="folder with dataset.json")
    bench.add_argument("--annotation", default="central-slice", help="sparse annotation spec, default central-slice")
    bench.add_argument("--channel", help=CHANNEL_HELP)
    bench.add_argument("--methods", default="sparse-only,full", help="comma-separated method names; " + method_help)
    bench.add_argument("--networks", default="2d", help="comma-separated: 2d, 3d (default 2d)")
    bench.add_argument("--out", required=True, type=Path, help="output folder")
    bench.add_argument("--folds", type=int, default=0, help="K-fold cross-validation instead of one split")
    bench.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions (default 0.7,0.15,0.15)")
    bench.add_argument("--max-cases", type=int, help="use a random subset of this many cases (quick looks)")
    bench.add_argument("--train-seed", type=int, help="training seed, the split and annotation staying those of --seed "
                                                       "(default: --seed); rerun with others to see a method's spread")
    bench.add_argument("--evaluate", default="test", choices=["test", "val"],
                       help="the part scored: test (default; results to report) or val (to choose a method's options "
                            "without the test part; the val volumes are then not used as validation cases in training)")
    bench.add_argument("--reuse-runs", type=Path, help="an earlier results.json on the same split: report its runs "
                                                       "that this benchmark does not run (e.g. the full baselines)")
    _add_training(bench)
    _add_common(bench)
    add_distributed_arguments(bench)

    run = commands.add_parser(
        "run", help="run a job folder round by round (the background worker), or create one from files",
        description="Run the job in JOBDIR (job.json) round by round, writing rounds/NNN/ and events.jsonl as the "
                    "Slicer module's background worker does; or create a job from an image and the annotation a user "
                    "painted (--image, --annotation, --out) and run it. A CANCEL file in the job folder, SIGTERM or "
                    "Ctrl-C stops at the next training step; --resume continues after the newest complete round.",
        epilog="regions: slices = every slice that carries paint along --axis (auto: the axis with the fewest "
               "painted slices); boxes = every voxel in --boxes, a JSON list (or .json file) of "
               '{"ijk": [[i0,j0,k0],[i1,j1,k1]]} (voxel corners, inclusive) or {"ras": [[x0,y0,z0],[x1,y1,z1]]} (RAS mm)',
    )
    run.add_argument("jobdir", nargs="?", type=Path, help="job folder holding job.json (leave out when creating one with --out)")
    run.add_argument("--resume", action="store_true", help="continue JOBDIR after its newest complete round")
    run.add_argument("--continue", action="store_true", dest="continue_job",
                     help="the next stage of JOBDIR, as the Slicer module's Continue: --annotation holds every slice "
                          "painted so far; each newly painted slice (along the job's slice axis, or --axis) becomes "
                          "ground truth and training resumes from JOBDIR's newest checkpoint in a new job folder "
                          "(--out, default JOBDIR-stage-2, or stage-N+1 for a folder named stage-N); --rounds: more "
                          "rounds (default 2; a job whose method decides its rounds keeps deciding)")
    run.add_argument("--image", type=Path, help="image to segment (NRRD, NIfTI, ...)")
    run.add_argument("--channel", type=int, help="with a multi-channel (4D) --image: the channel to segment (it is "
                                                 "written into the job folder as inputs/image.nrrd)")
    run.add_argument("--annotation", type=Path, help="the user's annotation: label map or Slicer .seg.nrrd on the image grid")
    run.add_argument("--region", choices=["slices", "boxes"], help="what the annotation covers (default slices)")
    run.add_argument("--axis", choices=["auto", "0", "1", "2"], help="slice axis in array order 0=k, 1=j, 2=i (default auto)")
    run.add_argument("--boxes", help="with --region boxes: JSON list of ROI boxes, or a .json file holding one")
    run.add_argument("--method", help=method_help + " (default: the Slicer module's Start method, propagate)")
    run.add_argument("--out", type=Path, help="new job folder to create and run (with --continue: the next stage's)")
    run.add_argument("--rounds", type=int, help="rounds to run, each writes a full result (default: the method runs "
                                                "until it is done)")
    run.add_argument("--iterations-per-round", type=int, help="training iterations per round (default: the method's own; "
                                                                 "propagate's network round 300, budget-based methods "
                                                                 "the budget / rounds)")
    run.add_argument("--reference", type=Path, help="full reference label map: per-round metrics")
    run.add_argument("--network", choices=["2d", "3d"], help="network (default 2d)")
    run.add_argument("--batch-size", type=int, help="training batch size (default: the budget's)")
    run.add_argument("--budget", choices=["quick", "paper"], help="quick (default) or paper")
    run.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    run.add_argument("--seed", type=int, help="training seed (default 0)")
    run.add_argument("--option", action="append", metavar="KEY=VALUE", dest="options",
                     help="a method option (repeatable), e.g. --method gradual --option predict=volume; the method "
                          "lists the ones it knows when given an unknown one (default: the method's own)")

    demo = commands.add_parser(
        "demo", help="what the Slicer module's Start gives, on bundled sample scans (a few minutes on CPU)",
        description="Play the Slicer module's user on sample scans: paint the object's central slice along k (every "
                    "voxel of it), press Start (the module's job with its defaults, run by a real worker; every "
                    "streamed round printed with its Dice against the full reference), then one correction: paint "
                    "the slice the last round suggests and Continue. Writes OUT/jobs/<scan>/stage-1, stage-2 (the "
                    "job folders), OUT/labels/*.nii.gz and OUT/segmentations/*.seg.nrrd (the final result), "
                    "OUT/metrics.md (every stage scored) and OUT/picture.png (look at this first). A Start job "
                    "trains no cohort model, so there is no model folder: each stage's checkpoint is in its job "
                    "folder.",
        epilog="The cohort demo's --rounds, --network, --annotation, --budget and --iterations are gone: give a job "
               "parameter with --parameter (e.g. --parameter rounds=3 --parameter network=3d) and a method "
               "option with --option (e.g. --option iterations=100).")
    demo.add_argument("--out", type=Path, default=Path("demo-output"),
                      help="output folder (default demo-output; an earlier demo's files there are replaced)")
    demo.add_argument("--cases", default="3", metavar="N|all",
                      help="how many scans to play, the first of dataset.json's list (default 3; all: every scan)")
    demo.add_argument("--dataset", type=Path, help="an MSD-style folder with dataset.json to play instead of the "
                                                   "bundled hippocampus sample (labels needed: they are painted from)")
    demo.add_argument("--channel", help=CHANNEL_HELP)
    demo.add_argument("--method", help=method_help + " (default: the module's Start method, propagate)")
    demo.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", dest="options",
                      help="a method option for the job (repeatable), e.g. --option iterations=100; the method "
                           "lists the ones it knows when given an unknown one")
    demo.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE", dest="parameters",
                      help="a job.json parameter over the Start defaults (repeatable), e.g. --parameter rounds=3")
    demo.add_argument("--device", default="auto", help="the job's device: auto (cuda > mps > cpu, as the module), "
                                                       "cpu, cuda, cuda:N or mps")
    demo.add_argument("--seed", type=int, default=0, help="the job's training seed (default 0)")
    return parser


CHANNEL_HELP = ("the channel of multi-channel (4D) images, as an index or a dataset.json modality name (default: "
                "the first where dataset.json lists several, e.g. FLAIR of MSD's BrainTumour)")


def _method_options(args: argparse.Namespace) -> dict:
    """``--option`` items, plus ``--labelled N`` as the method option ``labelled``."""
    options = parse_options(args.options)
    if getattr(args, "labelled", None) is not None:
        options["labelled"] = args.labelled
    return options


def cmd_train(args: argparse.Namespace) -> int:
    from .annotation import annotate_case, check_annotation
    from .cohort_spacing import at_common_spacing
    from .dataset import load_dataset
    from .methods import MethodOptions, get_method
    from .progress import TerminalReporter

    from .distributed.context import check_method, check_volumes
    from .distributed.run import save_model, session
    from .methods.base import SilentReporter

    method = get_method(args.method)
    options = MethodOptions(network=args.network, budget=args.budget, device=args.device, seed=args.seed,
                            iterations=args.iterations, extra=_method_options(args))
    method.check_options(options)  # a mistyped option fails before any data is loaded
    with session(args) as context:  # under torchrun: one rank of a data-parallel run (docs/distributed.md)
        check_method(args.method)
        dataset = load_dataset(args.dataset, args.channel)
        if note := dataset.channel_note():
            print(f"note: {note}", file=sys.stderr)
        if args.cases:
            dataset = dataset.subset(read_case_list(args.cases))
        check_volumes(len(dataset.cases))
        reporter = TerminalReporter() if context is None or context.is_main else SilentReporter()
        cases = []
        for ref in dataset.cases:
            case = annotate_case(dataset.load(ref), args.annotation, args.seed)
            check_annotation(case.label, case.annotated)
            cases.append(case)
        if args.spacing == "common":
            cases = at_common_spacing(cases, reporter.log)
        reporter.log(f"training `{args.method}` ({args.network.upper()}) on {len(cases)} cases of {dataset.name}, "
                     f"annotation `{args.annotation}`" + (f", {context.describe()}" if context else ""))
        segmenter = method.train(cases, options, reporter)
        segmenter.training = {**segmenter.training, "dataset": str(dataset.root), "annotation": args.annotation,
                              "channel": dataset.channel,
                              "cases": [c.case_id for c in cases], "seed": args.seed}
        if context is not None:
            segmenter.training["distributed"] = {"processes": context.world_size, "backend": context.backend,
                                                 "sampling": context.sampling}
        written = save_model(segmenter, args.out)  # rank 0 only under torchrun, renamed into place when complete
    if written is not None:
        print(f"model written to {written}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, parse_methods, run_benchmark

    try:
        split = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise SparseSegError(f"cannot parse --split {args.split!r}", "Write it as 0.7,0.15,0.15.") from None
    networks = [n.strip().lower() for n in args.networks.split(",") if n.strip()]
    for network in networks:
        if network not in ("2d", "3d"):
            raise SparseSegError(f"unknown network {network!r}", "Use --networks 2d, 3d or 2d,3d.")
    config = BenchConfig(dataset=args.dataset, annotation=args.annotation, methods=parse_methods(args.methods),
                         out=args.out, networks=networks, budget=args.budget, folds=args.folds, split=split,
                         seed=args.seed, device=args.device, max_cases=args.max_cases, iterations=args.iterations,
                         reuse_runs=args.reuse_runs, options=_method_options(args), train_seed=args.train_seed,
                         evaluate=args.evaluate, channel=args.channel, spacing=args.spacing)
    from .distributed.run import session

    with session(args) as context:  # under torchrun: one rank of a data-parallel benchmark (docs/distributed.md)
        run_benchmark(config)
    if context is None or context.is_main:
        print(f"report: {args.out / 'report.md'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import SAMPLE_DATA, run_demo

    text = str(args.cases).strip().lower()
    if text == "all":
        cases = None
    elif text.isdigit() and int(text) > 0:
        cases = int(text)
    else:
        raise SparseSegError(f"--cases {args.cases!r} is not a number of scans",
                             "Give --cases 1 or more, or --cases all.")
    written = run_demo(args.out, dataset_dir=args.dataset or SAMPLE_DATA, cases=cases, method=args.method,
                       options=args.options, parameters=args.parameters, device=args.device, seed=args.seed,
                       channel=args.channel)
    print("demo wrote:")
    for kind, path in written.items():
        print(f"  {kind:<14} {path}")
    return 0


COMMANDS = {"run": cmd_run, "train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "bench": cmd_bench, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "nproc", None) is not None:  # train/bench --nproc N: torchrun started for you
            from .distributed.launch import launch, preflight

            preflight(args)  # what can fail before any process starts
            return launch(argv, args.nproc, main)
        if args.command not in ("train", "bench"):
            from .distributed.context import env_world_size

            if env_world_size() > 1:
                raise SparseSegError(f"`sparseseg {args.command}` does not run under torchrun",
                                     "Only train and bench run data-parallel; start this command as one process.")
        return COMMANDS[args.command](args)
    except SparseSegError as error:
        from .distributed.run import error_is_printed, error_prefix

        if error_is_printed(error):  # under torchrun: rank 0's, and the others' own (not copies of a launch check)
            print(f"sparseseg: error: {error_prefix()}{error.one_line()}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("sparseseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
