"""Writing one round to the job folder in the order that makes it crash-safe, and naming the slice to annotate next."""

from __future__ import annotations

import io as bytes_io
import shutil
import time
from pathlib import Path

from ..jobs import layout
from ..jobs.atomic import atomic_write_bytes, atomic_write_json, fsync_file, sha256_file
from ..jobs.events import EventWriter
from ..jobs.schema import JobSpec
from .stages import stage_record

CHECKPOINT_FORMAT = 1


class RoundWriter:
    """Part of :class:`~.runner.Worker`: files, checkpoint, then ``round.json`` (the commit point), then the event."""

    jobdir: Path
    events: EventWriter
    #: The running job's paint digest (:func:`~SparseSegLib.case.paint_digest`) and the stage's planned last round,
    #: stored with each checkpoint (:func:`.stages.stage_record`).
    paint: str = ""
    planned: int = 0

    def write_round(self, spec: JobSpec, case, reference, result, adjustments: dict, started: float) -> dict:
        """Write one round (files, checkpoint, round.json last) and emit its ``round`` event."""
        import numpy as np
        import torch

        from ..io import write_image
        from ..jobs.suggestion import SUGGESTION_KEY, normalized_entropy

        index = result.index
        folder = layout.round_dir(self.jobdir, index)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        prefix = f"{layout.ROUNDS_DIR}/{layout.round_name(index)}/"
        written: dict[str, str] = {}
        label = np.asarray(result.labels[case.case_id], dtype=np.uint8)
        write_image(label, case.geometry, folder / layout.LABEL_FILE)
        written["label"] = layout.LABEL_FILE
        probabilities = result.probabilities.get(case.case_id)
        uncertainty = result.uncertainty.get(case.case_id)
        if uncertainty is None and probabilities is not None:
            uncertainty = normalized_entropy(probabilities)
        training = {key: value for key, value in result.metrics.items() if key != SUGGESTION_KEY}
        suggestion = self.suggest(spec, case, label, uncertainty, result.metrics.get(SUGGESTION_KEY))
        if spec.parameters["save_probabilities"] and probabilities is not None:
            for value in range(1, probabilities.shape[0]):
                name = layout.probability_file(value)
                write_image(probabilities[value].astype(np.float32), case.geometry, folder / name)
                written[f"probability-{value}"] = name
        if spec.parameters["save_uncertainty"] and uncertainty is not None:
            write_image(np.asarray(uncertainty, dtype=np.float32), case.geometry, folder / layout.UNCERTAINTY_FILE)
            written["uncertainty"] = layout.UNCERTAINTY_FILE
        for name in written.values():
            fsync_file(folder / name)
        metrics = None
        if reference is not None:
            from ..methods.common import class_names_of
            from ..metrics import case_metrics

            metrics = case_metrics(label, reference, case.geometry.spacing_kji, class_names_of([case]))
        checkpoint = layout.checkpoint_path(self.jobdir, index)
        buffer = bytes_io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "round": index, "method": spec.method,
                    "adjustments": adjustments, "state": result.state,
                    "stage": stage_record(self.paint, result.total, max(self.planned, result.total))}, buffer)
        atomic_write_bytes(checkpoint, buffer.getvalue())
        files = {key: prefix + name for key, name in written.items()}
        record = {
            "round": index,
            "rounds": result.total,
            "case_id": case.case_id,
            "files": files,
            "sha256": {key: sha256_file(folder / name) for key, name in written.items()},
            "geometry": {"size": list(case.geometry.size), "spacing": list(case.geometry.spacing),
                         "origin": list(case.geometry.origin), "direction": list(case.geometry.direction)},
            "classes": {str(v): n for v, n in sorted(case.class_names.items())},
            "metrics": metrics,
            "training": training,
            "checkpoint": f"{layout.CHECKPOINT_DIR}/{checkpoint.name}",
            "elapsed_s": round(time.perf_counter() - started, 3),
            **({SUGGESTION_KEY: suggestion} if suggestion else {}),
        }
        from ..jobs.events import jsonable

        record = jsonable(record)
        atomic_write_json(folder / layout.ROUND_FILE, record)  # the commit point
        self.events.emit("round", round=index, rounds=result.total, files=files, metrics=metrics,
                         training=training, elapsed_s=record["elapsed_s"],
                         **({SUGGESTION_KEY: record[SUGGESTION_KEY]} if suggestion else {}))
        for older, path in layout.checkpoints(self.jobdir).items():
            if older < index:
                path.unlink(missing_ok=True)
        return record

    def suggest(self, spec: JobSpec, case, label, uncertainty, own) -> dict | None:
        """The round's "annotate next" slice (:mod:`.jobs.suggestion`): the method's ``own`` when it names a slice
        of the volume, else the least certain slice of ``uncertainty``; None without either (or with nothing
        left to annotate). Computed from the in-memory result, so it costs no file."""
        from ..jobs.suggestion import method_suggestion, suggest_slice, suggestion_axis

        if case.annotated is None:  # a Case without a mask is annotated everywhere (Case.sparse_label)
            return None
        axis = suggestion_axis(spec.region, case.label, case.annotated)
        if axis is None:
            return None
        if own is not None:
            chosen = method_suggestion(own, axis, case.image.shape)
            if chosen is not None:
                return chosen
            self.events.emit("warning", message=f"the method's suggested slice {own!r} is not a slice of the volume "
                                                f"(shape {case.image.shape})",
                             hint="Ignored: the suggestion is computed from the round's uncertainty instead.")
        return suggest_slice(uncertainty, label, case.annotated, axis) if uncertainty is not None else None
