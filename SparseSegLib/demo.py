"""``sparseseg demo``: the main job on the bundled sample data, start to finish in a few minutes on CPU.

Every sample volume gets a sparse annotation (by default its central slice, as a user would paint it
in Slicer), one network is trained from those annotations, and every volume is then segmented in
full. The demo writes the label maps (NIfTI and Slicer .seg.nrrd), the model, a metrics table against
the full reference labels and a picture, and prints where they are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .annotation import annotate_case
from .dataset import load_dataset
from .io import write_image, write_segmentation
from .methods import MethodOptions, get_method
from .metrics import case_metrics, format_table, summarize
from .progress import TerminalReporter, format_duration
from .visualize import save_case_picture

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "hippocampus"


def run_demo(
    out: Path,
    dataset_dir: Path = SAMPLE_DATA,
    annotation: str = "central-slice",
    method: str = "sparse-only",
    network: str = "2d",
    budget: str = "quick",
    device: str = "auto",
    seed: int = 0,
    reporter: TerminalReporter | None = None,
) -> dict[str, Path]:
    """Run the demo and return the paths it wrote, by kind."""
    reporter = reporter or TerminalReporter()
    started = time.perf_counter()
    dataset = load_dataset(dataset_dir)
    cases = [annotate_case(dataset.load(ref), annotation, seed) for ref in dataset.cases]
    reporter.log(f"demo: {len(cases)} sample volumes from {dataset_dir}, each annotated on `{annotation}`; "
                 f"training `{method}` ({network.upper()} network, budget {budget})")
    options = MethodOptions(network=network, budget=budget, device=device, seed=seed)
    segmenter = get_method(method).train(cases, options, reporter)
    out = Path(out)
    written: dict[str, Path] = {"model": segmenter.save(out / "model")}
    per_case = {}
    results = {}
    for case in cases:
        label, _ = segmenter.predict(case.image, device if device != "auto" else "cpu")
        results[case.case_id] = label
        write_image(label, case.geometry, out / "labels" / f"{case.case_id}.nii.gz")
        write_segmentation(label, case.geometry, out / "segmentations" / f"{case.case_id}.seg.nrrd",
                           segmenter.class_names, segmenter.class_colors)
        per_case[case.case_id] = case_metrics(label, case.label, case.geometry.spacing_kji, dataset.class_names)
    written["labels"] = out / "labels"
    written["segmentations"] = out / "segmentations"
    summary = summarize(list(per_case.values()))
    table = "\n\n".join(
        f"### {group}\n\n" + format_table(per_case, group=group) for group in ("merged", *dataset.class_names.values())
    )
    header = (f"# SparseSeg demo\n\n{len(cases)} volumes, annotation `{annotation}`, method `{method}` "
              f"({network.upper()}), budget `{budget}`. Metrics of the full result against the full reference "
              f"label (HD95/ASSD in mm).\n\n")
    written["metrics"] = out / "metrics.md"
    written["metrics"].write_text(header + table + "\n")
    (out / "metrics.json").write_text(json.dumps({"per_case": per_case, "summary": summary}, indent=1))
    first = cases[0]
    merged = per_case[first.case_id]["merged"] if "merged" in per_case[first.case_id] else per_case[first.case_id]["mean"]
    written["picture"] = save_case_picture(
        first, results[first.case_id], out / "picture.png",
        title=f"{first.case_id}: `{annotation}` annotation -> {method} ({network.upper()})",
        metrics_text=f"Dice {merged['dice']:.3f}, HD95 {merged['hd95']:.1f} mm",
    )
    headline = summary.get("merged", summary["mean"])["dice"]
    reporter.log(f"mean Dice (merged label) over {len(cases)} volumes: {headline['mean']:.3f} ± {headline['sd']:.3f}; "
                 f"done in {format_duration(time.perf_counter() - started)}")
    return written
