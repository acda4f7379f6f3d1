"""What each branch of ``propagate``'s network round gives on the dev scans, and what a perfect end would give.

One painted central slice per dev scan (never the report scans), the Start stage run in-process; the
registration's and the networks' class probabilities that the network round fuses are recorded (by wrapping the
method's ``fuse``), and several fusions are scored from the same run, each anchored at the paint as the method
does, merged-foreground Dice / RAVD and class-mean Dice:

* ``registration``, ``network``, ``average`` (the plain argmax of their mean);
* ``ramp L``: the registration's weight falls linearly from 1 on the painted slice to 0 at ``L`` of the painted
  object's equivalent radii, the networks' rises (trust the chain near the paint, the image far from it);
* ``average > t``: the method's ``fuse`` with ``object_threshold=t`` (object only where the mean's object
  probability exceeds ``t``; the default's fusion is ``average > 0.6``);
* ``opening f``: ``average > 0.6`` with the ``end_opening=f`` option (beyond the painted span, a 3D opening by a
  ball of ``f`` times the painted slices' thickness, their largest inscribed radius;
  :func:`~..methods.propagate.fusion.open_ends`); ``area opening f``: the ball sized by the largest painted
  slice's equivalent radius instead (the eleventh session's form);
* ``opening F, classes registration|auto``: the default's result (``F``: its ``end_opening``) with each object voxel's class from the
  registration (always, or where the painted classes' intensities hardly separate: the ``classes`` option);
* ``classes a``: the object from the average, each object voxel's class from ``a`` registration + ``1 - a``
  networks (how far the class-mean drop of the network round can be narrowed);
* ``... oracle end``: the branch with every slice outside the reference object's true extent along k set to
  background: an upper bound for any end criterion, not a method.

``--save DIR`` writes each scan's two maps (float16) on the method's grid; ``--from-maps DIR`` scores them again
without running the method (the same scans and ``--slices``), for new fusion rows in seconds::

    OMP_NUM_THREADS=1 python -m SparseSegLib.benchmarks.propagate_branches --dataset left_atrium --cases 5 \
        [--slices 3] [--save DIR | --from-maps DIR]

``--mni152`` plays the mni152 tissue map instead (one scan, a report case: a check on a brain, never a choice).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from ..methods.propagate.fusion import classes_follow_registration, classes_from_registration, fuse, open_ends
from ..methods.propagate.settings import PropagateSettings
from .interactive.scans import DATA_ROOT, choose_scans, mni152_scan
from .propagate_dev import class_mean_dice, merged_scores, painted_case


#: Object thresholds of the average scored (the ``object_threshold`` option; the tenth session's sweep).
THRESHOLDS = (0.55, 0.6, 0.65, 0.7, 0.75)
#: Ball radii, as fractions of the painted slices' thickness (largest inscribed radius), scored on top of
#: ``average > 0.6``: the ``end_opening`` option (the twelfth session's sweep).
OPENINGS = (0.15, 0.2, 0.25, 0.3, 0.4)
#: The same opening with the ball sized by the painted area's equivalent radius instead (the eleventh session's
#: form of ``end_opening``, kept as rows: it shaves a brain's gyri, the reason the option scales by thickness).
AREA_OPENINGS = (0.1, 0.15, 0.2)


def fusions(network: np.ndarray, registration: np.ndarray, distance: np.ndarray, radius: float,
            inside: np.ndarray, painted: list[int] | None = None, radius_mm: float = 0.0,
            spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), thickness_mm: float = 0.0,
            auto_registration_classes: bool = False) -> dict[str, np.ndarray]:
    """Labels ``(k, j, i)`` of every scored fusion from the two ``(C, k, j, i)`` maps (see the module doc)."""
    maps = {"registration": registration, "network": network, "average": 0.5 * (network + registration)}
    for reach in (0.5, 1.0, 2.0):
        weight = np.clip(1 - distance / (reach * radius), 0, 1)[None, :, None, None]
        maps[f"ramp {reach}"] = weight * registration + (1 - weight) * network
    for name in ("registration", "average", "network"):
        cut = maps[name].copy()
        cut[0][~inside] = 1.0
        cut[1:, ~inside] = 0.0
        maps[f"{name} oracle end"] = cut
    labels = {name: p.argmax(0).astype(np.uint8) for name, p in maps.items()}
    for threshold in THRESHOLDS:
        labels[f"average > {threshold}"] = fuse(network, registration, "average", threshold=threshold)[0]
    for fraction in OPENINGS if painted else ():
        labels[f"opening {fraction}"] = open_ends(labels["average > 0.6"], painted, fraction * thickness_mm, spacing)
    for fraction in AREA_OPENINGS if painted else ():
        labels[f"area opening {fraction}"] = open_ends(labels["average > 0.6"], painted, fraction * radius_mm,
                                                       spacing)
    if painted:  # the default's opening, then each class source
        fraction = PropagateSettings().end_opening
        opened = open_ends(labels["average > 0.6"], painted, fraction * thickness_mm, spacing)
        by_registration = classes_from_registration(opened, registration)
        labels[f"opening {fraction}, classes registration"] = by_registration
        labels[f"opening {fraction}, classes auto"] = by_registration if auto_registration_classes else opened
    for share in (0.75, 1.0):
        blend = share * registration + (1 - share) * network
        labels[f"classes {share}"] = np.where(labels["average"] > 0, blend[1:].argmax(0) + 1, 0).astype(np.uint8)
    return labels


def save_maps(path: Path, volume, recorded: dict[str, np.ndarray], reference: np.ndarray) -> None:
    """One scan's recorded maps (float16) with the image, the paint and the reference, all on the method's grid."""
    moved_axis = 0 if volume.axis is None else volume.axis
    crop = (slice(None),) + volume.window
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, network=recorded["network"].astype(np.float16),
                        registration=recorded["registration"].astype(np.float16), image=volume.image,
                        label=volume.label, annotated=volume.annotated, painted=np.array(volume.painted),
                        reference=np.moveaxis(reference, moved_axis, 0)[crop], spacing=np.array(volume.spacing, float))


def main(argv: list[str] | None = None) -> int:
    import torch

    from ..cli_options import parse_options
    from ..engine.propagation import open_end_reach, slice_distance
    from ..methods import get_method
    from ..methods import propagate as propagate_module
    from ..methods.base import MethodOptions, SilentReporter
    from ..methods.propagate.fusion import anchor_at_paint
    from ..methods.propagate.volume import PaintedVolume

    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.propagate_branches",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="hippocampus", help="a folder under ../shared/data or a path")
    parser.add_argument("--cases", type=int, default=5, help="dev scans (at most the dev part's 5)")
    parser.add_argument("--mni152", action="store_true", help="the mni152 tissue map instead of --dataset's dev scans "
                        "(a report case of the interactive benchmark: a check on a brain, not a place to choose)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a propagate option")
    parser.add_argument("--slices", type=int, default=1,
                        help="painted slices, evenly spread over the object's extent along k (1: the central one)")
    parser.add_argument("--from-maps", metavar="DIR", help="score the maps an earlier --save wrote to DIR instead of "
                        "running the method (same --dataset, --cases, --slices)")
    parser.add_argument("--save", metavar="DIR", help="also write each scan's two maps, image and reference on the "
                        "method's cropped grid (DIR/CASE.npz), to study other fusions offline")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = DATA_ROOT / args.dataset if not args.dataset.startswith(("/", ".")) else args.dataset
    extra = parse_options(args.option)
    settings = PropagateSettings.parse(extra)
    recorded: dict[str, np.ndarray] = {}
    original = propagate_module.fuse

    def recording_fuse(network, registration, mode, margin=2, threshold=0.5):
        recorded["network"], recorded["registration"] = network, registration
        return original(network, registration, mode, margin, threshold)

    rows: dict[str, list[tuple[float, float, float]]] = {}
    for scan in [mni152_scan()] if args.mni152 else choose_scans(folder, "dev", args.cases):
        case, reference = painted_case(scan, args.slices)
        if args.from_maps:
            with np.load(Path(args.from_maps) / f"{scan.case_id}.npz") as saved:
                recorded.update({name: saved[name].astype(np.float32) for name in ("network", "registration")})
        else:
            with mock.patch.object(propagate_module, "fuse", recording_fuse):
                for _ in get_method("propagate").run_rounds([case], MethodOptions(device="cpu", extra=extra, rounds=None),
                                                            SilentReporter()):
                    pass
        volume = PaintedVolume.from_case(case, settings)
        spacing, moved = case.geometry.spacing_kji, volume.spacing
        radius = open_end_reach(volume.label[volume.painted[0]], moved, 1.0)
        inside = (np.moveaxis(reference, volume.axis, 0) > 0).any(axis=(1, 2))
        distance = slice_distance(volume.image.shape[0], volume.painted).astype(float)
        if args.save:
            save_maps(Path(args.save) / f"{scan.case_id}.npz", volume, recorded, reference)
        for name, labels in fusions(recorded["network"], recorded["registration"], distance, radius, inside,
                                    volume.painted, volume.largest_painted_radius_mm(), moved,
                                    volume.largest_painted_thickness_mm(),
                                    classes_follow_registration("auto", volume.image, volume.label,
                                                                volume.annotated)).items():
            labels = anchor_at_paint(labels, volume.painted_foreground, volume.painted_background)
            labels[volume.annotated] = volume.label[volume.annotated]
            full = volume.to_case_grid(labels)
            dice, ravd = merged_scores(full, reference, spacing)
            rows.setdefault(name, []).append((dice, ravd, class_mean_dice(full, reference, spacing)))
        print(f"  {scan.case_id}: " + ", ".join(f"{n} {v[-1][0]:.3f}" for n, v in rows.items()), flush=True)
    print(f"{'mni152' if args.mni152 else args.dataset} x{len(next(iter(rows.values())))}, {args.slices} slice(s), {' '.join(args.option) or '(defaults)'}, "
          "network round: fusion | merged Dice | mean RAVD (largest) | class-mean Dice")
    for name, values in rows.items():
        table = np.array(values)
        print(f"  {name:26s} {table[:, 0].mean():.3f} | {table[:, 1].mean():+.2f} ({table[:, 1].max():+.2f}) | "
              f"{table[:, 2].mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
