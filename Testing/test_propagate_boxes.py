"""The single-scan default, ``propagate``, from ROI boxes on a real sample scan: each box face's paint registered
outwards (:mod:`SparseSegLib.methods.propagate.box_prior`), and the Start job from boxes never flooding."""

from __future__ import annotations

import numpy as np

from SparseSegLib.defaults import START_METHOD, start_parameters
from SparseSegLib.jobs.client import Job
from SparseSegLib.jobs.suggestion import SuggestedSlice
from SparseSegLib.methods.propagate.box_prior import box_faces

#: Small enough for a test (seconds): the flood came from the network alone, however long it trained.
QUICK = {"iterations": 40, "batch_size": 4}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def boxed(case, count: int = 2, edge: int = 9) -> tuple[object, list[tuple[slice, slice, slice]]]:
    """``case`` annotated in ``count`` cubes of ``edge`` voxels centred on the object at (n+1)/(count+1) of its k
    extent, as a user boxes parts of a structure (the benchmark's protocol, docs/results/interactive.md)."""
    foreground = case.label > 0
    ks = np.flatnonzero(foreground.any(axis=(1, 2)))
    annotated, boxes = np.zeros(case.label.shape, bool), []
    for n in range(count):
        k = int(round(ks[0] + (n + 1) / (count + 1) * (ks[-1] - ks[0])))
        j, i = np.argwhere(foreground[k]).mean(0).round().astype(int)
        box = tuple(slice(max(0, c - edge // 2), c - edge // 2 + edge) for c in (k, j, i))
        annotated[box] = True
        boxes.append(box)
    return case.with_annotation(annotated), boxes


def test_each_box_has_six_faces_at_its_bounds_and_overlapping_boxes_each_keep_their_visible_parts():
    annotated = np.zeros((20, 20, 20), bool)
    annotated[2:5, 3:9, 4:6] = True
    faces = list(box_faces(annotated))
    assert {(f.axis, f.side, f.index) for f in faces} == {(0, -1, 2), (0, 1, 4), (1, -1, 3), (1, 1, 8),
                                                         (2, -1, 4), (2, 1, 5)}
    normal_to_k = [f for f in faces if f.axis == 0]
    assert all(f.rectangle == (slice(3, 9), slice(4, 6)) and f.patch.all() for f in normal_to_k)
    # a second box overlapping the first along k: its own top face, and the first box's top face only where the
    # second does not cover it (before, the union's bounding box gave one wrong face per side)
    annotated[4:8, 3:6, 4:6] = True
    tops = {f.index: f for f in box_faces(annotated) if f.axis == 0 and f.side == 1}
    assert sorted(tops) == [4, 7]
    assert tops[7].rectangle == (slice(3, 6), slice(4, 6)) and tops[7].patch.all()
    assert tops[4].rectangle == (slice(6, 9), slice(4, 6)) and tops[4].patch.all()


def test_a_start_job_from_roi_boxes_carries_the_object_out_of_them_and_never_floods(sample_case, tmp_path):
    """The module's Start with *Annotated region: boxes*: round 1 registers the box faces' paint outwards, round 2
    fuses the networks with it; both keep the paint and stay near the object (before, the networks alone came back
    with 9-15x the hippocampus from three boxes on the benchmark's development scans, 12x here)."""
    case, boxes = boxed(sample_case)
    painted = np.where(case.annotated, case.label, 0).astype(np.uint8)
    corners = [{"ijk": [[int(b[a].start) for a in (2, 1, 0)], [int(b[a].stop) - 1 for a in (2, 1, 0)]]} for b in boxes]
    parameters = {**start_parameters(), "method_options": dict(QUICK)}
    job = Job.create(tmp_path / "job", case.image, case.geometry, painted, START_METHOD,
                     region={"kind": "boxes", "boxes": corners}, parameters=parameters, device="cpu",
                     classes={1: {"name": "Anterior"}, 2: {"name": "Posterior"}}, case_id=case.case_id,
                     reference=sample_case.label)
    job.start(env={"OMP_NUM_THREADS": "1"})
    outcome = job.wait(timeout=300)
    assert outcome.status == "finished", outcome.message
    assert job.complete_rounds() == [1, 2]  # the faces' registration streams first, then the network round
    truth = sample_case.label > 0
    for index in (1, 2):
        result = job.load_round(index).label
        np.testing.assert_array_equal(result[case.annotated], painted[case.annotated])
        assert (result > 0).sum() < 1.5 * truth.sum(), (index, int((result > 0).sum()), int(truth.sum()))
        assert dice(result > 0, truth) > dice(painted > 0, truth) + 0.03, (index, dice(result > 0, truth))
    carried = (job.load_round(1).label > 0) & ~case.annotated
    assert carried.sum() > 0.3 * (truth & ~case.annotated).sum()  # the object goes on beyond the boxes
    # annotate next: the method's own plane (any axis), on the result's object and not painted yet
    last = job.load_round(2)
    suggestion = SuggestedSlice.from_record(last.record)
    assert suggestion is not None and suggestion.score is None  # the method's (the generic one has a score)
    plane = [slice(None)] * 3
    plane[suggestion.axis] = suggestion.index
    assert (last.label[tuple(plane)] > 0).any() and not case.annotated[tuple(plane)].all()


def test_the_box_benchmarks_user_boxes_parts_of_the_object_as_the_module_writes_boxes(sample_case):
    """``python -m SparseSegLib.benchmarks.box_start``: the boxes hold object, lie in the volume, and the job region
    it writes (voxel corners i, j, k) marks exactly those voxels when the job reads it."""
    from SparseSegLib.benchmarks.box_start import region_of, user_boxes
    from SparseSegLib.jobs.regions import boxes_mask

    label = sample_case.label
    boxes = user_boxes(label, sample_case.geometry.spacing_kji, 3, 0.33)
    assert len(boxes) == 3
    mask = np.zeros(label.shape, bool)
    for low, high in boxes:
        assert all(0 <= a <= b < n for a, b, n in zip(low, high, label.shape))
        box = tuple(slice(a, b + 1) for a, b in zip(low, high))
        assert (label[box] > 0).any()
        mask[box] = True
    np.testing.assert_array_equal(boxes_mask(region_of(boxes)["boxes"], sample_case.geometry), mask)
    inside = (mask & (label > 0)).sum() / (label > 0).sum()
    assert 0.2 < inside < 0.95  # parts of the object, not all of it


def test_a_box_jobs_suggestion_is_the_plane_that_brings_the_unboxed_object_closest_to_the_paint():
    """ROI boxes have no slice axis: the suggested slice may lie across any axis, and for a bar boxed in its middle
    it is the plane along the bar (both ends at once), never a slice without object (the generic suggestion pointed
    at the volume's first or last slice on 3 of 5 hippocampus dev scans)."""
    from SparseSegLib.methods.propagate.suggestion import nearest_paint_plane

    labels = np.zeros((12, 12, 34), np.uint8)
    labels[5:8, 5:8, 2:31] = 1
    annotated = np.zeros(labels.shape, bool)
    annotated[3:10, 3:10, 12:19] = True
    assert nearest_paint_plane(labels, annotated, (1.0, 1.0, 1.0)) == (0, 6)
    # slices 2 mm apart along k: the plane across j, which cuts the bar as finely as the one across k, but no
    # slice across k can be nearer in mm than 2 to the bar's voxels off it
    assert nearest_paint_plane(labels, annotated, (2.0, 1.0, 1.0)) == (1, 6)
    # the bar boxed at one end only: still a plane along it, not a slice across the far end
    annotated[:] = False
    annotated[3:10, 3:10, 2:8] = True
    assert nearest_paint_plane(labels, annotated, (1.0, 1.0, 1.0))[0] in (0, 1)
    annotated[:] = labels > 0  # everything predicted is painted: nothing to suggest
    assert nearest_paint_plane(labels, annotated, (1.0, 1.0, 1.0)) is None
