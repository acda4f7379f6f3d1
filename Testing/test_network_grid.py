"""The network round on a coarser in-plane grid (``propagate``'s ``network_max_pixels``): what is sampled where, the
probabilities brought back onto any box of the crop, and on a real sample scan a job whose networks ran coarse,
whose saved model records the coarser spacing it learnt at."""

from __future__ import annotations

import numpy as np
import pytest

from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods.propagate.network_grid import CoarseGrid
from SparseSegLib.methods.propagate.settings import PropagateSettings


def test_the_grid_follows_the_registration_cap_and_keeps_every_painted_slice():
    assert CoarseGrid.for_crop((40, 240, 240), 65536).factor == 1
    assert CoarseGrid.for_crop((300, 444, 512), 65536).factor == 2
    assert CoarseGrid.for_crop((300, 444, 512), 0).factor == 1
    grid = CoarseGrid.for_crop((7, 30, 21), 100)
    assert grid.factor == 4
    label = np.random.default_rng(0).integers(0, 3, (7, 30, 21))
    coarse = grid.samples(label)
    assert coarse.shape == (7, 8, 6)  # axis 0 (the painted slices) untouched
    assert np.array_equal(coarse, label[:, ::4, ::4])  # coarse voxel n on fine voxel 4 n: labels stay labels
    assert grid.image(np.ones((7, 30, 21), np.float32)).shape == (7, 8, 6)
    with pytest.raises(SparseSegError, match="network_max_pixels"):
        PropagateSettings.parse({"network_max_pixels": "-5"})


@pytest.mark.parametrize("region", [None, (slice(1, 6), slice(3, 29), slice(0, 21)), (slice(0, 7), slice(27, 30),
                                                                                      slice(5, 6))])
def test_probabilities_come_back_on_any_box_exactly_where_they_vary_linearly(region):
    shape = (7, 30, 21)
    grid = CoarseGrid.for_crop(shape, 100)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    ramp = 0.1 + 0.8 * (0.6 * j / 29 + 0.4 * i / 20)  # object probability, linear in-plane
    fine = np.stack([1 - ramp, ramp])
    box = grid.covering(region) or (slice(None),) * 3
    coarse = grid.samples(fine[0])[box], grid.samples(fine[1])[box]
    back = grid.probabilities(np.stack(coarse), region)
    expected = fine[(slice(None),) + (region or (slice(None),) * 3)]
    assert back.shape == expected.shape
    # linear interpolation is exact between coarse centres; past the last one the edge value is carried
    inside = (slice(None), slice(None), slice(None, 25 - (region[1].start if region else 0)),
              slice(None, 17 - (region[2].start if region else 0)))
    assert np.allclose(back[inside], expected[inside], atol=1e-5)
    assert np.allclose(back.sum(0), 1.0, atol=1e-5)


def test_a_job_whose_networks_ran_coarse_saves_a_model_at_the_coarse_spacing(sample_case):
    from SparseSegLib.methods import get_method
    from SparseSegLib.methods.base import MethodOptions, SilentReporter
    from SparseSegLib.methods.propagate.model import segmenter_from_state
    from SparseSegLib.methods.propagate.volume import PaintedVolume

    class Recorder(SilentReporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    label = sample_case.label
    painted_axis = 2  # across i: the coarse plane is (k, j) of the scan
    middle = int(np.flatnonzero(label.any((0, 1))).mean())
    annotated = np.zeros(label.shape, bool)
    annotated[:, :, middle] = True
    case = sample_case.with_annotation(annotated)
    options = MethodOptions(device="cpu", extra={"iterations": 40, "batch_size": 4, "network_max_pixels": 200},
                            rounds=None)
    reporter = Recorder()
    registration, fused = list(get_method("propagate").run_rounds([case], options, reporter))
    factor = fused.state["network_grid"]
    assert factor >= 2  # the sample's crop holds far more than 200 pixels per slice
    # the networks trained on the coarse grid: the one across the painted slices drew patches the coarse slice's size
    crop = PaintedVolume.from_case(case, PropagateSettings.parse(options.extra)).image.shape
    coarse = tuple(int(np.ceil(-(-n // factor) / 8) * 8) for n in crop[1:])
    assert any(f"(slices across axis 0): 40 iterations, batch 4, patch {coarse}" in line for line in reporter.lines), \
        reporter.lines
    labels = fused.labels[case.case_id]
    assert labels.shape == label.shape
    assert np.array_equal(labels[annotated], label[annotated])  # the paint comes back exactly
    foreground = labels > 0
    truth = label > 0
    assert foreground[:, :, middle + 2].any()  # the object reached other slices, on the scan's own grid
    assert 2 * (foreground & truth).sum() / (foreground.sum() + truth.sum()) > 0.5
    model = segmenter_from_state(case, options, fused.state)
    for axis, spacing in enumerate(case.geometry.spacing_kji):
        expected = spacing * (1 if axis == painted_axis else factor)
        assert model.spacing["median"][axis] == pytest.approx(expected, rel=1e-5)
