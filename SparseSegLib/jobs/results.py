"""Reading what a worker wrote: the rounds a job has completed, as :class:`RoundData` ready to import into a scene.

Part of the GUI side's :class:`~SparseSegLib.jobs.client.Job`, kept apart from :mod:`.client`, which starts,
watches and stops the worker. No torch: SimpleITK and the image I/O are imported when a round is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SparseSegError
from . import layout
from .atomic import sha256_file


@dataclass
class RoundData:
    """One complete round loaded from disk, with the geometry to place it in a scene."""

    index: int
    label: Any  # numpy uint8 (k, j, i)
    geometry: Any  # SparseSegLib.case.Geometry
    record: dict  # round.json
    probabilities: dict[int, Any] = field(default_factory=dict)
    uncertainty: Any = None

    @property
    def metrics(self) -> dict | None:
        return self.record.get("metrics")


class JobResults:
    """Part of :class:`~.client.Job`: the complete rounds of its folder, read back from disk."""

    directory: Path

    def complete_rounds(self) -> list[int]:
        return layout.complete_rounds(self.directory)

    def round_record(self, index: int) -> dict:
        return layout.read_round_record(self.directory, index)

    def load_round(self, index: int | None = None, probabilities: bool = True, verify: bool = False) -> RoundData:
        """Read round ``index`` (default: the newest complete one): label map, geometry and optional maps.

        ``verify`` also checks every file against the SHA-256 in ``round.json``.
        """
        from ..io import geometry_of, read_image, read_label

        import SimpleITK as sitk

        if index is None:
            done = self.complete_rounds()
            if not done:
                raise SparseSegError(f"{self.directory} has no complete round yet", "Wait for the first round event.")
            index = done[-1]
        try:
            record = self.round_record(index)
        except FileNotFoundError:
            raise SparseSegError(f"round {index} of {self.directory} is not complete", "Load a round listed by a round event.") from None
        files = record["files"]
        if verify:
            for key, relative in files.items():
                if sha256_file(self.directory / relative) != record["sha256"][key]:
                    raise SparseSegError(f"{relative} does not match its checksum in round.json",
                                         "The file was changed after the worker wrote it; run the job again.")
        label_path = self.directory / files["label"]
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(label_path))
        reader.ReadImageInformation()
        geometry = geometry_of(reader)
        label = read_label(label_path, geometry)
        data = RoundData(index=index, label=label, geometry=geometry, record=record)
        if probabilities:
            for key, relative in files.items():
                if key.startswith("probability-"):
                    data.probabilities[int(key.split("-", 1)[1])] = read_image(self.directory / relative)[0]
            if "uncertainty" in files:
                data.uncertainty = read_image(self.directory / files["uncertainty"])[0]
        return data
