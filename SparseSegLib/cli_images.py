"""``sparseseg predict`` and ``sparseseg evaluate``: a saved model on image files, and label maps against references.

Kept apart from :mod:`SparseSegLib.cli` (the parser and the training commands) so each stays small.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import SparseSegError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)
                       and not p.name.lower().endswith(".seg.nrrd") and not p.name.startswith("."))
        if not files:
            raise SparseSegError(f"no image files in {path}", f"Give a folder with {', '.join(IMAGE_SUFFIXES)} files.")
        return files
    raise SparseSegError(f"input not found: {path}", "Give an image file or a folder of image files.")


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine.device import select_device
    from .engine.model import load_segmenter
    from .engine.spacing import prediction_spacing
    from .io import output_path_like, read_image, write_image

    segmenter = _job_segmenter(args.model) if (args.model / "job.json").is_file() else load_segmenter(args.model)
    device = select_device(args.device)
    files = _image_files(args.input)
    channel = args.channel if args.channel is not None else segmenter.training.get("channel")
    for index, path in enumerate(files, start=1):
        image, geometry = read_image(path, channel)
        label, _ = segmenter.predict(image, device, geometry.spacing_kji)
        written = write_image(label, geometry, output_path_like(path, args.out))
        note = ""
        if (moved := prediction_spacing(geometry.spacing_kji, segmenter.spacing)) is not None:
            note = (f" (voxels {_mm(geometry.spacing_kji)} mm: predicted at the model's {_mm(moved)} mm and "
                    "resampled back)")
        print(f"[{index}/{len(files)}] {path.name} -> {written}{note}")
    return 0


def _job_segmenter(job: Path):
    """A job folder's (``sparseseg run``'s, the module's) newest complete round, built as Save model builds it: a
    CLI user applies what a job learnt without a second command, and a later round is picked up the next time."""
    from .worker.model_export import job_segmenter

    segmenter = job_segmenter(job)
    print(f"model: the newest complete round of job {job} (what Save model writes; to keep it: "
          f"python -m SparseSegLib.worker.model_export {job} MODEL_DIR)")
    return segmenter


def _mm(spacing_kji) -> str:
    """A spacing ``(k, j, i)`` as the user reads it: ``i x j x k``."""
    return " x ".join(f"{float(s):g}" for s in tuple(spacing_kji)[::-1])


def _parse_classes(text: str | None, ref: Path) -> dict[int, str]:
    if text:
        try:
            return {int(k): v for k, v in (item.split("=", 1) for item in text.split(","))}
        except ValueError:
            raise SparseSegError(f"cannot parse --classes {text!r}", "Write it as 1=Anterior,2=Posterior.") from None
    for candidate in (ref / "dataset.json", ref.parent / "dataset.json"):
        if candidate.is_file():
            labels = json.loads(candidate.read_text()).get("labels", {})
            return {int(k): v for k, v in labels.items() if int(k) != 0}
    return {}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .io import read_image, read_label
    from .metrics import case_metrics, format_table, summarize

    refs = {p.name: p for p in _image_files(args.ref)}
    preds = _image_files(args.pred)
    pairs = [(p, refs[p.name]) for p in preds if p.name in refs]
    if not pairs:
        raise SparseSegError(f"no file in {args.pred} has a namesake in {args.ref}", "Predictions and references are matched by file name.")
    class_names = _parse_classes(args.classes, args.ref)
    per_case = {}
    for pred_path, ref_path in pairs:
        _, geometry = read_image(ref_path)
        reference = read_label(ref_path)
        predicted = read_label(pred_path, geometry)
        names = class_names or {v: f"Class {v}" for v in range(1, int(max(reference.max(), predicted.max(), 1)) + 1)}
        per_case[pred_path.name] = case_metrics(predicted, reference, geometry.spacing_kji, names)
    groups = list(next(iter(per_case.values())))
    for group in groups:
        print(f"\n## {group}\n")
        print(format_table(per_case, group=group))
    missing = len(preds) - len(pairs)
    if missing:
        print(f"\nnote: {missing} prediction(s) without a reference were skipped", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"per_case": per_case, "summary": summarize(list(per_case.values()))}, indent=1))
        print(f"\nwrote {args.json}")
    return 0
