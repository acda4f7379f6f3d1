"""Published figures our benchmarks are reported next to, keyed by data set and by our method.

Values are copied from the papers in ../shared/seeds (see ../shared/docs/methods.md). Dice/IoU/TPR/TNR
are fractions; distances in mm. ``rows`` maps our ``method (network)`` run names to the paper's row.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperRow:
    label: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class PaperReference:
    source: str
    dataset: str
    protocol: str
    rows: dict[str, PaperRow] = field(default_factory=dict)


_ANDERSON = "Anderson et al., Incremental 2D self-labelling, BMC Med Imaging 2025, Table 2 (BRAIN_2 = MSD Task04 Hippocampus)"

HIPPOCAMPUS = PaperReference(
    source=_ANDERSON,
    dataset="hippocampus",
    protocol="70/15/15 split, one central slice per training volume, anterior+posterior merged into one label, "
    "volumes resized to 32x32 in-plane; mean of 5 runs",
    rows={
        "full (3D)": PaperRow("3D full supervision", {"dice": 0.882, "iou": 0.748, "tpr": 0.891, "tnr": 0.996}),
        "full (2D)": PaperRow("2D full supervision", {"dice": 0.812, "iou": 0.639, "tpr": 0.782, "tnr": 0.992}),
        "sparse-only (2D)": PaperRow("2D central slices only", {"dice": 0.484, "iou": 0.292, "tpr": 0.443, "tnr": 0.979}),
        "self-labelling-faithful (2D)": PaperRow("2D self-labelling", {"dice": 0.615, "iou": 0.421, "tpr": 0.578, "tnr": 0.984}),
        "self-labelling (2D)": PaperRow(
            "2D self-labelling (vs our improved default)", {"dice": 0.615, "iou": 0.421, "tpr": 0.578, "tnr": 0.984}
        ),
        "self-labelling-random (2D)": PaperRow(
            "2D self-labelling, random order", {"dice": 0.564, "iou": 0.438, "tpr": 0.570, "tnr": 0.975}
        ),
    },
)

LEFT_ATRIUM = PaperReference(
    source="Osman et al., Collaborative learning (left atrium, 80 train / 20 test, one central slice per volume)",
    dataset="left_atrium",
    protocol="published on the 20 official test cases, which are not in ../shared/data; our split is of the 80",
    rows={
        "full (3D)": PaperRow("full supervision", {"dice": 0.856, "boundary_iou": 0.751}),
        "collaborative-faithful (2D)": PaperRow("collaborative learning", {"boundary_iou": 0.661, "assd": 2.95}),
    },
)

REFERENCES = {"hippocampus": HIPPOCAMPUS, "left_atrium": LEFT_ATRIUM, "left atrium": LEFT_ATRIUM}


def reference_for(dataset_name: str, root_name: str = "") -> PaperReference | None:
    """The published figures for a data set, looked up by its dataset.json name or folder name."""
    for key in (dataset_name.lower(), root_name.lower()):
        if key in REFERENCES:
            return REFERENCES[key]
    return None
