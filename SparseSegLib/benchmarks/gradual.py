"""Gradual Learning benchmark: the 3D GL paper's protocol on the left atrium, and the interactive use.

    python -m SparseSegLib.benchmarks.gradual --out bench-output/gradual [options]   (make bench-gradual)

Part 1, the paper's protocol (Engster et al., MIDL 2025, Figure 2): one training scan annotated with
n random non-overlapping boxes (n = 2, 3, 10), 3D Gradual Learning for R repetitions; after the
initial training on the boxes (round 0) and after every repetition the network segments ``test``
other scans and the mean IoU (foreground) is recorded; repeated for ``train`` training scans;
mean +- sd over training scans per round. The benchmark line is a network trained on the same scan's
full label map for as many iterations as the whole GL run. The scans are split once by ``seed``:
the first ``test`` of a seeded permutation are the test scans, the next ``train`` the training scans.

Part 2, the interactive use: one volume, one annotated slice (2D slice-stack GL) or 3 boxes (3D GL),
transductive Dice on that same volume after every round and the wall time of every round (training +
pseudo-labelling + whole-volume prediction), on the mni152 tissue map and one left-atrium scan.

Sizes are the paper's scaled to the (downsampled) scans: box edge = round(smallest axis x 80 / 192)
(80^3 boxes in ~192x256x256 scans), crop = the multiple of 8 nearest 0.8 x box (64 for 80), step
s = round(box x 8 / 80) (8 for 80). Every size, reduction and timing lands in ``results.json`` and
``report.md``; ``gradual_iou.png`` is the Figure 2 analogue. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..annotation import annotate_case, check_annotation
from ..case import Case, Geometry
from ..dataset import load_dataset
from ..io import read_image, read_label
from ..jobs.atomic import atomic_write_text
from ..methods.base import MethodOptions
from ..methods.gradual import GradualLearning
from ..methods.supervised import FullSupervision
from ..metrics import mask_dice, mask_iou
from ..progress import TerminalReporter, format_duration
from .gradual_report import write_report

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------------
# Data


def downsample(case: Case, factor: int) -> Case:
    """Block-mean image and block-centre label on a grid ``factor`` times coarser (geometry updated)."""
    if factor <= 1:
        return case
    shape = tuple((n // factor) * factor for n in case.image.shape)
    cut = tuple(slice(0, n) for n in shape)
    blocks = (shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor)
    image = case.image[cut].reshape(blocks).mean(axis=(1, 3, 5)).astype(np.float32)
    centre = factor // 2
    label = None if case.label is None else np.ascontiguousarray(case.label[cut][centre::factor, centre::factor, centre::factor])
    g = case.geometry
    direction = np.asarray(g.direction).reshape(3, 3)
    shift = direction @ (np.asarray(g.spacing) * (factor - 1) / 2.0)
    geometry = Geometry(size=(image.shape[2], image.shape[1], image.shape[0]),
                        spacing=tuple(float(s) * factor for s in g.spacing),
                        origin=tuple(float(o) for o in np.asarray(g.origin) + shift), direction=g.direction)
    return Case(case.case_id, image, geometry, label, None, dict(case.class_names), dict(case.class_colors))


def paper_sizes(shape: tuple[int, int, int]) -> dict:
    """Box edge, crop and step scaled from the paper's 80^3 boxes / 64^3 crops / s = 8 in ~192x256x256 scans."""
    box = max(4, int(round(min(shape) * 80 / 192)))
    crop = max(8, int(round(0.8 * box / 8)) * 8)
    step = max(1, int(round(box * 8 / 80)))
    return {"box": box, "crop": crop, "step": step}


def iou(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Foreground IoU (all foreground classes merged); 1 when both are empty (:func:`~SparseSegLib.metrics.mask_iou`)."""
    return float(mask_iou(predicted > 0, reference > 0))


def dice_per_class(predicted: np.ndarray, reference: np.ndarray, classes: list[int]) -> dict[int, float]:
    """Dice of each of ``classes``; 1 for a class absent from both (:func:`~SparseSegLib.metrics.mask_dice`)."""
    return {value: float(mask_dice(predicted == value, reference == value)) for value in classes}


def load_mni(factor: int) -> Case:
    image, geometry = read_image(SHARED / "mni152" / "t1.nii.gz")
    label = read_label(SHARED / "mni152" / "tissue.nii.gz", geometry)
    case = Case("mni152", image.astype(np.float32), geometry, label, None, {1: "grey matter", 2: "white matter"})
    return downsample(case, factor)


# --------------------------------------------------------------------------------------------------
# Runs


class Recorder:
    """results.json, rewritten after every run so a stopped benchmark keeps what it finished."""

    def __init__(self, out: Path, config: dict) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data = {"config": config, "environment": environment(), "protocol": [], "full": [], "interactive": [],
                     "started": time.strftime("%Y-%m-%d %H:%M")}

    def save(self) -> None:
        atomic_write_text(self.out / "results.json", json.dumps(self.data, indent=1), sync=False)
        write_report(self.data, self.out)


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "device": "cpu"}


def gl_options(args, sizes: dict, network: str = "3d", step=None, stop_when_covered: bool = False,
               iterations: int | None = None) -> MethodOptions:
    """The protocol runs every repetition (the paper plots all 10 for every n), so coverage does not stop it."""
    patch = (sizes["crop"],) * 3 if network == "3d" else None
    return MethodOptions(network=network, device="cpu", seed=args.seed, rounds=args.rounds,
                         iterations_per_round=iterations or args.iterations_per_round, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, patch_size=patch,
                         extra={"step": step if step is not None else sizes["step"], "stop_when_covered": stop_when_covered,
                                # the paper's pseudo-labels: no confidence gate, no anchoring at the paint (issue 19)
                                "confidence": None, "anchor": False})


def protocol_split(args):
    """The protocol's seeded split (shared by the GL runs and their control, so both see the same scans):
    test and training ids, a loader that downsamples, the loaded test cases and the paper-scaled sizes."""
    dataset = load_dataset(args.dataset)
    ids = [ref.case_id for ref in dataset.cases]
    order = [ids[i] for i in np.random.default_rng(args.seed).permutation(len(ids))]
    test_ids, train_ids = order[: args.test], order[args.test: args.test + args.train]
    refs = {ref.case_id: ref for ref in dataset.cases}
    load = lambda cid: downsample(dataset.load(refs[cid]), args.downsample)  # noqa: E731
    test = [load(cid) for cid in test_ids]
    return test_ids, train_ids, load, test, paper_sizes(test[0].image.shape)


def run_protocol(args, recorder: Recorder, reporter) -> None:
    test_ids, train_ids, load, test, sizes = protocol_split(args)
    recorder.data["split"] = {"test": test_ids, "train": train_ids, "shape": list(test[0].image.shape), "sizes": sizes}
    reporter.log(f"protocol: {len(train_ids)} training scan(s) x n in {args.ns}, {len(test)} test scans, "
                 f"downsampled x{args.downsample} to {test[0].image.shape}; box {sizes['box']}, crop {sizes['crop']}, "
                 f"step {sizes['step']}, {args.rounds} rounds x {args.iterations_per_round} iterations")

    def test_iou(segmenter) -> list[float]:
        return [iou(segmenter.predict(case.image, "cpu")[0], case.label) for case in test]

    for train_index, train_id in enumerate(train_ids):
        case = load(train_id)
        for n in args.ns:
            annotated = annotate_case(case, f"boxes:{n}:{sizes['box']}", args.seed + train_index)
            summary = check_annotation(annotated.label, annotated.annotated)
            options = gl_options(args, sizes)
            method = GradualLearning()
            rounds = []
            reporter.log(f"[{train_id}] n={n}: {summary['fraction']:.1%} of the scan annotated, "
                         f"{summary['foreground_voxels']} foreground voxels in the boxes")
            for result in method.run_rounds([annotated], options, reporter):
                tick = time.perf_counter()
                scores = test_iou(method.loop.segmenter)
                target = method.loop.targets[0]
                pseudo = (target >= 0) & ~annotated.annotated
                record = {"round": result.index - 1, "test_iou_mean": float(np.mean(scores)), "test_iou": scores,
                          "train_iou": iou(result.labels[train_id], case.label),
                          "pseudo_label_accuracy": float(np.mean(target[pseudo] == case.label[pseudo])) if pseudo.any() else None,
                          "labelled_fraction": result.metrics["labelled_fraction"],
                          "round_seconds": result.metrics["seconds"], "test_seconds": round(time.perf_counter() - tick, 2)}
                rounds.append(record)
                reporter.log(f"[{train_id}] n={n} GL repetition {record['round']}: test IoU {record['test_iou_mean']:.3f}, "
                             f"labelled {record['labelled_fraction']:.0%}, PL acc {record['pseudo_label_accuracy']}, "
                             f"{record['round_seconds']:.0f}+{record['test_seconds']:.0f} s")
            recorder.data["protocol"].append({"train": train_id, "n": n, "box": sizes["box"], "rounds": rounds,
                                              "annotated_fraction": summary["fraction"],
                                              "annotated_foreground": summary["foreground_voxels"]})
            recorder.save()
        if args.full:
            tick = time.perf_counter()
            iterations = args.rounds * args.iterations_per_round
            full_options = replace(gl_options(args, sizes), rounds=1, iterations_per_round=None, iterations=iterations, extra={})
            segmenter = FullSupervision().train([case], full_options, reporter)
            scores = test_iou(segmenter)
            recorder.data["full"].append({"train": train_id, "iterations": iterations, "test_iou_mean": float(np.mean(scores)),
                                          "test_iou": scores, "seconds": round(time.perf_counter() - tick, 1)})
            reporter.log(f"[{train_id}] full-volume training: test IoU {np.mean(scores):.3f}")
            recorder.save()


def run_control(args, recorder: Recorder, reporter) -> None:
    """Sparse-only on the same boxes for as many iterations as the whole GL run: is GL's gain more than more training?"""
    from ..methods.supervised import SparseOnly

    test_ids, train_ids, load, test, sizes = protocol_split(args)
    for train_index, train_id in enumerate(train_ids):
        case = load(train_id)
        for n in args.ns:
            annotated = annotate_case(case, f"boxes:{n}:{sizes['box']}", args.seed + train_index)  # the protocol's boxes
            iterations = args.rounds * args.iterations_per_round
            options = replace(gl_options(args, sizes), rounds=1, iterations_per_round=None, iterations=iterations, extra={})
            tick = time.perf_counter()
            segmenter = SparseOnly().train([annotated], options, reporter)
            scores = [iou(segmenter.predict(c.image, "cpu")[0], c.label) for c in test]
            recorder.data.setdefault("control", []).append(
                {"train": train_id, "n": n, "iterations": iterations, "test_iou_mean": float(np.mean(scores)),
                 "test_iou": scores, "seconds": round(time.perf_counter() - tick, 1)})
            reporter.log(f"[{train_id}] n={n} sparse-only for {iterations} iterations: test IoU {np.mean(scores):.3f}")
            recorder.save()


def run_interactive(args, recorder: Recorder, reporter) -> None:
    dataset = load_dataset(args.dataset)
    la_ref = next(ref for ref in dataset.cases if ref.case_id == (args.interactive_case or dataset.cases[0].case_id))
    volumes = [("mni152", load_mni(args.mni_downsample)), ("left atrium " + la_ref.case_id,
                                                           downsample(dataset.load(la_ref), args.downsample))]
    for name, case in volumes:
        sizes = paper_sizes(case.image.shape)
        classes = sorted(int(v) for v in np.unique(case.label) if v > 0)
        for form, spec, network in (("2D slice-stack GL, one slice", "slices:1", "2d"),
                                    ("3D GL, 3 boxes", f"boxes:3:{sizes['box']}", "3d")):
            key = f"{name.split()[0]}:{network}"
            if args.forms and key not in args.forms:
                continue
            annotated = annotate_case(case, spec, args.seed)
            options = gl_options(args, sizes, network, step="auto" if network == "2d" else None, stop_when_covered=True,
                                 iterations=args.interactive_iterations)
            options = replace(options, rounds=args.interactive_rounds)
            method = GradualLearning()
            rows = []
            started = time.perf_counter()
            for result in method.run_rounds([annotated], options, reporter):
                label = result.labels[case.case_id]
                unknown = ~annotated.annotated
                scores = dice_per_class(label, case.label, classes)
                rows.append({"round": result.index - 1, "dice": scores, "dice_mean": float(np.mean(list(scores.values()))),
                             "dice_unannotated": float(np.mean(list(dice_per_class(label[unknown], case.label[unknown], classes).values()))),
                             "labelled_fraction": result.metrics["labelled_fraction"], "seconds": result.metrics["seconds"],
                             "step": result.metrics["step"]})
                reporter.log(f"[interactive {name}, {form}] round {result.index - 1}: Dice {rows[-1]['dice_mean']:.3f}, "
                             f"labelled {rows[-1]['labelled_fraction']:.0%}, {rows[-1]['seconds']:.1f} s")
            recorder.data["interactive"].append({"volume": name, "shape": list(case.image.shape), "form": form, "spec": spec,
                                                 "network": network, "sizes": sizes, "rounds": rows,
                                                 "wall_seconds": round(time.perf_counter() - started, 1)})
            recorder.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.gradual", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-output/gradual"))
    parser.add_argument("--dataset", type=Path, default=SHARED / "left_atrium")
    parser.add_argument("--part", choices=["all", "protocol", "interactive", "control"], default="all",
                        help="control: sparse-only on the protocol's boxes for the whole GL run's iterations")
    parser.add_argument("--downsample", type=int, default=2, help="left-atrium downsampling factor (default 2)")
    parser.add_argument("--mni-downsample", type=int, default=2, help="mni152 downsampling factor (default 2)")
    parser.add_argument("--train", type=int, default=5, help="training scans (paper 5)")
    parser.add_argument("--test", type=int, default=16, help="test scans (default 16)")
    parser.add_argument("--ns", default="2,3,10", help="numbers of boxes (paper 2,3,10)")
    parser.add_argument("--rounds", type=int, default=11, help="rounds = 1 + GL repetitions (paper 11)")
    parser.add_argument("--interactive-rounds", type=int, default=6)
    parser.add_argument("--forms", help="part 2 only these, comma-separated from mni152:2d,mni152:3d,left:2d,left:3d")
    parser.add_argument("--interactive-case", help="left-atrium case id for part 2 (default the first)")
    parser.add_argument("--iterations-per-round", type=int, default=300, help="protocol (paper: 500,000 in total)")
    parser.add_argument("--interactive-iterations", type=int, default=200, help="per round in part 2")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--no-full", dest="full", action="store_false", help="skip the full-volume benchmark line")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran 10-100x slower)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.ns = [int(n) for n in args.ns.split(",")]
    args.forms = [f.strip() for f in args.forms.split(",")] if args.forms else None
    if args.threads:
        torch.set_num_threads(args.threads)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    recorder = Recorder(args.out, config)
    reporter = TerminalReporter()
    started = time.perf_counter()
    if args.part in ("all", "interactive"):
        run_interactive(args, recorder, reporter)
    if args.part in ("all", "protocol"):
        run_protocol(args, recorder, reporter)
    if args.part == "control":
        run_control(args, recorder, reporter)
    recorder.data["wall_seconds"] = round(time.perf_counter() - started, 1)
    recorder.save()
    reporter.log(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'} in {format_duration(recorder.data['wall_seconds'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
