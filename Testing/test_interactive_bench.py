"""The interactive benchmark (``python -m SparseSegLib.benchmarks.interactive``) on the bundled hippocampus scans:
where the user paints, the Slicer baselines (Fill between slices, copy-the-slice), the choice of the next slice,
the report writer on a made-up results dict, and one tiny end-to-end run with a correction stage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from SparseSegLib.annotation import object_extent
from SparseSegLib.benchmarks.interactive.baselines import copy_slices, fill_between_slices, painted_label
from SparseSegLib.benchmarks.interactive.cli import main
from SparseSegLib.benchmarks.interactive.next_slice import choose_next, gap_slice, worst_slice
from SparseSegLib.benchmarks.interactive.report import PNG_NAME, dice_curves, write_report
from SparseSegLib.benchmarks.interactive.scans import central_slice, choose_scans, even_slices, slice_at
from SparseSegLib.benchmarks.interactive.scoring import score


def test_the_user_paints_the_middle_of_the_object_and_spreads_more_slices(sample_label, sample_dir):
    first, last = object_extent(sample_label, 0)
    k = central_slice(sample_label)
    assert k == first + (last - first + 1) // 2 and sample_label[k].any()
    assert even_slices(sample_label, 1) == [k]
    spread = even_slices(sample_label, 5)
    assert len(set(spread)) == 5 and first <= min(spread) and max(spread) <= last
    assert all(sample_label[s].any() for s in spread)
    # a user who paints where they happen to be (--first-at): the fraction of the extent, both ends included
    assert (slice_at(sample_label, 0.0), slice_at(sample_label, 1.0)) == (first, last)
    assert abs(slice_at(sample_label, 0.5) - k) <= 1 and first < slice_at(sample_label, 0.75) < last
    # dev and report scans never overlap, and the choice is the same on every run
    dev, report = choose_scans(sample_dir, "dev", 10), choose_scans(sample_dir, "report", 10)
    assert len(dev) == 5 and len(report) == 7 and not {s.case_id for s in dev} & {s.case_id for s in report}
    assert [s.case_id for s in choose_scans(sample_dir, "dev", 2)] == [s.case_id for s in dev[:2]]


def test_copy_the_slice_fills_the_true_extent_from_the_nearest_painted_slice(sample_label):
    first, last = object_extent(sample_label, 0)
    k = central_slice(sample_label)
    copied = copy_slices(sample_label, [k])
    assert all(np.array_equal(copied[s], sample_label[k]) for s in range(first, last + 1))
    assert not copied[:first].any() and not copied[last + 1:].any()
    low, high = first + 2, last - 2
    two = copy_slices(sample_label, [low, high])
    middle = (low + high) // 2
    assert np.array_equal(two[middle], sample_label[low]) and np.array_equal(two[middle + 1], sample_label[high])


def test_fill_between_slices_interpolates_between_the_painted_slices(sample_case):
    pytest.importorskip("itk", reason="needs itk-morphologicalcontourinterpolation (pip install -e .[bench])")
    reference, spacing, classes = sample_case.label, sample_case.geometry.spacing_kji, sample_case.class_names
    one = painted_label(reference, [central_slice(reference)])
    assert np.array_equal(fill_between_slices(one), one)  # one slice: nothing to interpolate, as in Slicer
    slices = even_slices(reference, 3)
    filled = fill_between_slices(painted_label(reference, slices))
    assert all(np.array_equal(filled[s], reference[s]) for s in slices)  # painted slices stay as painted
    assert not filled[: slices[0]].any() and not filled[slices[-1] + 1:].any()  # nothing past the outer slices
    assert set(np.unique(filled)) <= {0, 1, 2}
    # each class is interpolated on its own, between slices that hold it: the whole object as one class
    # reaches every slice between the outer painted ones
    whole = fill_between_slices(painted_label((reference > 0).astype(np.uint8), slices))
    assert all(whole[s].any() for s in range(slices[0], slices[-1] + 1))
    assert score(filled, reference, spacing, classes)["dice"] > score(one, reference, spacing, classes)["dice"] + 0.2


def test_the_next_slice_follows_the_suggestion_or_falls_back(sample_label):
    k = central_slice(sample_label)
    mask = np.zeros(sample_label.shape, bool)
    mask[k] = True
    first, last = object_extent(sample_label, 0)
    gap = gap_slice(sample_label, mask)
    assert gap.source == "gap" and first <= gap.index <= last and gap.index != k
    wrong = sample_label.copy()
    wrong[first + 1] = 0  # the result misses the object on one slice
    worst = worst_slice(wrong, sample_label, mask)
    assert (worst.index, worst.source) == (first + 1, "worst")
    assert choose_next("worst", sample_label, {}, sample_label, mask).source == "gap"  # nothing wrong anywhere
    suggested = choose_next("suggested", wrong, {"suggested_slice": {"axis": 0, "index": last}}, sample_label, mask)
    assert (suggested.axis, suggested.index, suggested.source) == (0, last, "suggested")
    fallback = choose_next("suggested", wrong, {"suggested_slice": {"axis": 0, "index": k}}, sample_label, mask)
    assert fallback.source == "gap" and "painted already" in fallback.note
    assert "no slice" in choose_next("suggested", wrong, {}, sample_label, mask).note


def test_a_user_who_paints_another_view_paints_and_corrects_along_that_axis(sample_label):
    """``--axis 2``: the first slice, the even spread, the gap and the most wrong slice all lie across axis 2, and
    the baselines paint across it too; a suggestion along another axis is still followed."""
    from SparseSegLib.benchmarks.interactive.user import baselines
    from SparseSegLib.jobs.continuation import paste_slices

    first, last = object_extent(sample_label, 2)
    k = central_slice(sample_label, 2)
    assert first < k < last and sample_label[:, :, k].any()
    assert k == first + (last - first + 1) // 2 and slice_at(sample_label, 1.0, 2) == last
    spread = even_slices(sample_label, 3, 2)
    assert len(spread) == 3 and all(sample_label[:, :, s].any() for s in spread)
    _, mask = paste_slices(np.zeros_like(sample_label), np.zeros(sample_label.shape, bool), sample_label, 2, [k])
    gap = gap_slice(sample_label, mask, axis=2)
    assert (gap.axis, gap.source) == (2, "gap") and first <= gap.index <= last and gap.index != k
    wrong = sample_label.copy()
    wrong[:, :, last] = 0  # the result misses the object on the last slice across axis 2
    assert (worst_slice(wrong, sample_label, mask, 2).index, worst_slice(wrong, sample_label, mask, 2).axis) == (last, 2)
    assert choose_next("gap", wrong, {}, sample_label, mask, 2).axis == 2
    other = choose_next("suggested", wrong, {"suggested_slice": {"axis": 0, "index": 3}}, sample_label, mask, 2)
    assert (other.axis, other.index, other.source) == (0, 3, "suggested")
    spacing, classes = (1.0, 1.0, 1.0), {1: "anterior", 2: "posterior"}
    across = baselines(sample_label, spacing, classes, range(1, 3), [[k]], axis=2)
    along_k = baselines(sample_label, spacing, classes, range(1, 3), axis=0)
    assert across["axis"] == 2 and across["even"]["1"]["slices"] == [k] and "axis" not in along_k
    # the baselines copy / interpolate across axis 2, not along k
    two = even_slices(sample_label, 2, 2)
    assert across["even"]["2"]["slices"] == two
    assert across["even"]["1"]["copy"] == score(copy_slices(sample_label, [k], 2), sample_label, spacing, classes)
    filled = fill_between_slices(painted_label(sample_label, two, 2), 2)
    assert across["even"]["2"]["fill"] == score(filled, sample_label, spacing, classes)
    assert across["even"]["2"]["fill"] != along_k["even"]["2"]["fill"]
    assert across["method_slices"]["1"]["slices"] == [k]


def _fake_scan(case_id: str, dice: list[float]) -> dict:
    """A results.json scan record as :func:`play_scan` writes it, with made-up figures."""
    def scores(d: float) -> dict:
        return {"dice": d, "hd95": 3.0, "ravd": -0.1, "merged": {"dice": d + 0.01, "hd95": 2.0, "ravd": 0.0}, "classes": {}}

    stages = []
    for n, d in enumerate(dice, start=1):
        rounds = [{"round": r, "seen_s": 10.0 * r, "worker_s": 8.0 * r} for r in range(1, 3)]
        if n == 1:
            rounds[0]["scores"], rounds[1]["scores"] = scores(d - 0.1), scores(d)
        stages.append({"stage": n, "painted": [{"axis": 0, "index": 10 + i, "source": "central" if i == 0 else "suggested"}
                                               for i in range(n)],
                       "status": "finished", "rounds": rounds, "first_s": 10.0, "final_s": 20.0, "final": scores(d)})
    base = {str(n): {"slices": list(range(n)), "fill": {"dice": 0.1 * n}, "copy": {"dice": 0.5}} for n in range(1, 4)}
    return {"dataset": "hippocampus", "case_id": case_id, "shape": [35, 51, 35], "status": "done", "stages": stages,
            "baselines": {"even": base, "method_slices": {}}}


def test_the_report_has_every_table_and_the_plot(tmp_path):
    results = {"config": {"slices": 3, "split": "report", "split_seed": 0, "next": "suggested", "continue_rounds": 2,
                          "jobs": 1, "threads": 2, "command": "python -m SparseSegLib.benchmarks.interactive --cases 2"},
               "job": {"method": "gradual", "parameters": {"rounds": 5}, "device": "cpu", "source": "test"},
               "scans": {"hippocampus/a": _fake_scan("a", [0.6, 0.7, 0.8]), "hippocampus/b": _fake_scan("b", [0.8, 0.9, 1.0])}}
    curves = dice_curves(list(results["scans"].values()), 3)
    assert curves["method"][2][:2] == pytest.approx((0.9, np.std([0.8, 1.0], ddof=1)))
    assert curves["fill"][1][0] == pytest.approx(0.2) and curves["copy"][0][2] == 2
    text = write_report(results, tmp_path).read_text()
    assert "## hippocampus (2 scans)" in text
    assert "| 2 | 2 | 0.700 ± 0.141 | 3.00 ± 0.00 | -0.100 ± 0.000 | 0.710 ± 0.141 |" in text  # round 2 after 1 slice
    assert "| 3 | 0.900 ± 0.141 | 0.300 ± 0.000 | 0.500 ± 0.000 |" in text  # method / fill / copy with 3 slices
    assert "| 1 | Start | 10 ± 0 | 20 ± 0 | 2.0 ± 0.0 |" in text
    assert "- `a` (35x51x35): done; painted 10 [central], 11 [suggested], 12 [suggested]" in text
    assert "The same with all classes merged into one foreground:" in text and "| 3 | 0.910 ± 0.141 | – | – |" in text
    assert "--cases 2" in text and (tmp_path / PNG_NAME).stat().st_size > 1000


@pytest.mark.slow
def test_one_tiny_scan_end_to_end_with_a_correction(sample_dir, tmp_path, capsys):
    """One sample scan, sparse-only with a few iterations: Start streams 2 scored rounds, one Continue adds
    the next slice as ground truth, the baselines are scored; a second run with --resume plays nothing."""
    pytest.importorskip("itk", reason="needs itk-morphologicalcontourinterpolation (pip install -e .[bench])")
    arguments = ["--dataset", str(sample_dir), "--cases", "1", "--split", "dev", "--method", "sparse-only",
                 "--parameter", "rounds=2", "--parameter", "iterations_per_round=3", "--parameter", "batch_size=2",
                 "--slices", "2", "--continue-rounds", "1", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)]
    assert main(arguments) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["job"]["method"] == "sparse-only" and results["job"]["parameters"]["rounds"] == 2
    (record,) = results["scans"].values()
    assert record["status"] == "done", record
    first, second = record["stages"]
    assert [r["round"] for r in first["rounds"]] == [1, 2] and all(0 <= r["scores"]["dice"] <= 1 for r in first["rounds"])
    assert 0 < first["first_s"] <= first["final_s"]
    assert [r["round"] for r in second["rounds"]] == [3] and second["final"]["dice"] is not None
    central, added = second["painted"]
    assert central == {"axis": 0, "index": record["central_slice"], "source": "central"}
    assert added["source"] in ("suggested", "gap") and added["index"] != central["index"]
    from SparseSegLib.io import read_label

    annotated = read_label(f"{second['job']}/inputs/annotated.nrrd")
    assert annotated[added["index"]].all() if added["axis"] == 0 else np.take(annotated, added["index"], added["axis"]).all()
    assert set(record["baselines"]["even"]) == {"1", "2", "3", "4", "5"}  # up to 5 whatever the play stops at
    assert 0 <= record["baselines"]["even"]["2"]["fill"]["dice"] <= 1
    assert "hippocampus" in (tmp_path / "report.md").read_text() and (tmp_path / PNG_NAME).is_file()
    capsys.readouterr()
    assert main(arguments + ["--resume"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_cases_0_plays_the_mni152_folder_alone(tmp_path, capsys):
    """``--cases 0 --mni152 DIR``: the template (e.g. a thick-slice copy of it) without the default data sets;
    ``--cases 0`` alone would play nothing and is refused."""
    from SparseSegLib.benchmarks.interactive.cli import build_parser, choose, main

    for name in ("t1.nii.gz", "tissue.nii.gz"):
        (tmp_path / name).write_bytes(b"")  # choose() only locates the files
    scans = choose(build_parser().parse_args(["--cases", "0", "--mni152", str(tmp_path)]))
    assert [scan.key for scan in scans] == ["mni152/mni152"]
    assert main(["--cases", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--cases 0 only with --mni152" in capsys.readouterr().err
    assert main(["--cases", "0", "--mni152", str(tmp_path), "--first-at", "1.5", "--out", str(tmp_path / "out")]) == 2
    assert "--first-at 1.5 is not a fraction" in capsys.readouterr().err
