"""One review-and-correct session in 3D Slicer: the user's volume and annotation -> worker -> rounds.

Typical use (the module's widget does exactly this from a ``qt.QTimer``)::

    session = Session(volume_node, annotation_node, SessionSettings(), work_dir)  # the Start defaults
    session.start()                       # exports the job, starts ``python -m SparseSegLib.worker``
    ... every 200 ms: session.poll()      # never blocks; imports at most one new round per call
    session.cancel()                      # Stop: the worker ends at its next step, rounds so far stay
    ... the user corrects a few slices of session.result_node in the Segment Editor ...
    session.continue_session(rounds=2)    # corrected slices become ground truth; training goes on
    session.accept()

Rules kept here, not in the widget:

* the annotation node is only read (Slicer's exporter rasterises it on the volume's grid);
* the result node gets one segment per class (ids ``SparseSeg_<value>``), named and coloured like the
  annotation's segments and tagged ``SparseSeg.Round`` with the round they come from; each round import is
  one ``SaveStateForUndo`` (when the scene records undo) and one node modification;
* Continue compares the result node with the round it last received: every slice (along the annotation's
  slice axis) where the user changed a voxel becomes an annotated slice of the next stage, whose job
  starts from the previous stage's newest checkpoint (its rounds are linked in, so ``--resume`` picks up
  where training stopped: the network is not trained again from scratch).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from pathlib import Path

import numpy as np

from ..errors import SparseSegError
from ..jobs import continuation, layout
from ..jobs.client import Job
from ..jobs.events import format_event
from ..jobs.regions import annotated_mask, painted_slices
from ..jobs.suggestion import SuggestedSlice
from . import annotate_next, mrml
from .settings import DEVICE_CHOICES, METHOD_CHOICES, ORIENTATION_CHOICES, REGION_CHOICES, SessionSettings  # noqa: F401
from .corrections import corrected_planes, describe_planes
from .progress_text import progress_line
from .text import tr as _  # named _ so that Slicer's lupdate_preprocess extracts the calls

#: Segment tag (and result-node attribute) holding the round a segment's voxels come from.
ROUND_TAG = "SparseSeg.Round"
#: Segment tag holding the class value of a result segment.
CLASS_TAG = "SparseSeg.Class"
#: Result-node attribute holding the job folder of the newest stage.
JOB_ATTRIBUTE = "SparseSeg.Job"
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text or "volume").strip("_")[:60] or "volume"


class Session:
    """A volume, its sparse annotation, the worker jobs it ran (one per stage) and the result node."""

    def __init__(self, volume_node, annotation_node, settings: SessionSettings | None = None,
                 work_dir: str | os.PathLike | None = None, result_node=None, roi_nodes=(),
                 uncertainty_node=None) -> None:
        if volume_node is None:
            raise SparseSegError(_("no input volume selected"), _("Select the volume to segment."))
        self.volume_node = volume_node
        self.annotation_node = annotation_node
        self.settings = settings or SessionSettings()
        self.scene = volume_node.GetScene()
        if work_dir is None:
            import tempfile

            work_dir = Path(tempfile.gettempdir()) / "SparseSeg"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.root = Path(work_dir) / f"{stamp}-{_safe_name(volume_node.GetName())}-{os.getpid()}-{id(self) % 10000}"
        self.result_node = result_node
        self.roi_nodes = list(roi_nodes or [])
        self.uncertainty_node = uncertainty_node
        self.jobs: list[Job] = []
        self.geometry = None
        self.ras_matrix = None
        self.image = None
        self.classes: list[mrml.SegmentClass] = []
        self.segment_ids: dict[int, str] = {}
        self.annotation_label: np.ndarray | None = None
        self.annotated_mask: np.ndarray | None = None
        self.slice_axis: int | None = None
        self.region_description = ""
        self.imported_rounds: list[int] = []
        self.planned = 0  # the newest plan the worker announced (round / progress events)
        self.pending_rounds: deque[int] = deque()
        self.last_imported_label: np.ndarray | None = None
        self.last_suggestion: SuggestedSlice | None = None  # the newest imported round's "annotate next"
        self.last_progress: dict | None = None
        self.log: list[str] = []
        self.corrections: list[dict] = []
        self.status = "idle"  # idle, running, stopping, finished, cancelled, error, accepted
        self.error_message: str | None = None
        self.timings: dict[str, float] = {}

    # -- state ------------------------------------------------------------------------------------

    @property
    def job(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None

    @property
    def running(self) -> bool:
        """True while :meth:`poll` has work left: the worker lives, a round waits for import, or the worker has
        exited but its last events (a late round, ``finished``) are not read yet (status still running/stopping)."""
        return self.job is not None and (self.job.is_running() or bool(self.pending_rounds)
                                         or self.status in ("running", "stopping"))

    @property
    def can_continue(self) -> bool:
        return self.job is not None and not self.running and bool(self.imported_rounds) and self.status != "accepted"

    def _say(self, text: str) -> None:
        self.log.append(text)

    # -- start ------------------------------------------------------------------------------------

    def _region(self) -> dict:
        if self.settings.region == "boxes":
            return {"kind": "boxes", "boxes": mrml.roi_ras_boxes(self.roi_nodes, self.volume_node)}
        if self.settings.region != "slices":
            raise SparseSegError(_("unknown annotated region {region}").format(region=repr(self.settings.region)),
                                 _("Use slices or boxes."))
        return {"kind": "slices", "axis": mrml.array_axis_for_orientation(self.volume_node, self.settings.orientation)}

    def start(self) -> Job:
        """Export the volume and annotation to a new job and start the worker (stage 1)."""
        if self.jobs:
            raise SparseSegError(_("this session has already started"), _("Use Continue, or start a new session."))
        if self.settings.method not in METHOD_CHOICES and not os.environ.get("SPARSESEG_ANY_METHOD"):
            raise SparseSegError(_("method {method} is not offered in Slicer").format(method=repr(self.settings.method)),
                                 _("Choose one of {methods}.").format(methods=", ".join(METHOD_CHOICES)))
        started = time.perf_counter()
        self.geometry = mrml.volume_geometry(self.volume_node)
        self.ras_matrix = mrml.ijk_to_ras(self.volume_node)
        self.image = np.array(mrml.volume_array(self.volume_node), copy=True)
        label, self.classes = mrml.export_annotation(self.annotation_node, self.volume_node)
        region = self._region()
        mask, self.region_description = annotated_mask(region, label, self.geometry)
        if region["kind"] == "slices":
            counts = [len(painted_slices(label, a)) for a in range(3)]
            self.slice_axis = int(np.argmin(counts)) if region["axis"] == "auto" else int(region["axis"])
        if not np.any(label[mask] > 0):
            raise SparseSegError(_("no painted voxel lies in the annotated region"),
                                 _("Paint inside the ROI boxes (or use painted slices as the region)."))
        self.annotation_label, self.annotated_mask = label, mask
        job = self._create_job(1, label, region=region, rounds=self.settings.rounds)
        self._prepare_result_node()
        self._say(_("annotation: {region}; classes {classes}").format(
            region=self.region_description, classes=", ".join(f"{c.value}: {c.name}" for c in self.classes)))
        self.timings["export_s"] = time.perf_counter() - started
        self._start_job(job, resume=False)
        return job

    def _create_job(self, stage: int, label: np.ndarray, rounds: int, region: dict | None = None,
                    mask: np.ndarray | None = None) -> Job:
        folder = self.root / f"stage-{stage}"
        job = Job.create(folder, self.image, self.geometry, label, self.settings.method, region=region, mask=mask,
                         classes={c.value: c.job_entry() for c in self.classes},
                         parameters=self.settings.parameters(rounds), device=self.settings.device,
                         seed=self.settings.seed, case_id=_safe_name(self.volume_node.GetName()))
        self.jobs.append(job)
        return job

    def _start_job(self, job: Job, resume: bool) -> None:
        env = {"SPARSESEG_SESSION": "slicer", **{k: v for k, v in (self.settings.env or {}).items()}}
        if self.settings.device == "cpu":
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        job.start(python=self.settings.worker_python(), env=env, resume=resume)
        self.status = "running"
        self.error_message = None
        if self.result_node is not None:
            self.result_node.SetAttribute(JOB_ATTRIBUTE, str(job.directory))
        self._say(_("worker started for {folder} with {python}").format(folder=job.directory, python=self.settings.worker_python()))

    def _prepare_result_node(self) -> None:
        scene = self.scene
        if self.result_node is None:
            self.result_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                       f"{self.volume_node.GetName()} SparseSeg")
        if self.result_node is self.annotation_node:
            raise SparseSegError(_("the result segmentation is the annotation itself"), _(
                "Choose another (or a new) segmentation node for the result: SparseSeg never modifies the annotation."))
        if self.result_node.GetDisplayNode() is None:
            self.result_node.CreateDefaultDisplayNodes()
        self.result_node.SetReferenceImageGeometryParameterFromVolumeNode(self.volume_node)
        self.result_node.SetAndObserveTransformNodeID(self.volume_node.GetTransformNodeID())
        self.result_node.UndoEnabledOn()
        self.segment_ids = mrml.ensure_segments(self.result_node, self.classes)
        for value, segment_id in self.segment_ids.items():
            self.result_node.GetSegmentation().GetSegment(segment_id).SetTag(CLASS_TAG, str(value))

    # -- polling ----------------------------------------------------------------------------------

    def poll(self, max_imports: int = 1) -> list[dict]:
        """New worker events since the last call; imports at most ``max_imports`` new rounds. Never blocks
        on the worker (reads what is on disk, returns)."""
        job = self.job
        if job is None:
            return []
        events = job.poll()
        for event in events:
            kind = event.get("event")
            if event.get("rounds"):  # round and progress events carry the plan (the method's when the job leaves it)
                self.planned = int(event["rounds"])
            if kind == "round" and event.get("round") not in self.imported_rounds:
                self.pending_rounds.append(int(event["round"]))
            elif kind == "progress":
                self.last_progress = event
                continue
            elif self.status == "accepted":
                pass  # Accept stopped the worker: its late cancelled/finished/error event keeps "accepted"
            elif kind in ("started", "finished", "cancelled", "error"):
                self.status = "running" if kind == "started" else kind
                if kind == "error":
                    self.error_message = format_event(event)
            self._say(format_event(event))
        for _attempt in range(max_imports):
            if not self.pending_rounds:
                break
            self.import_round(self.pending_rounds.popleft())
        if self.status in ("running", "stopping") and not job.is_running() and not events and job.reader.caught_up():
            outcome = job.outcome()  # the worker died without a final event (crash, kill -9)
            if outcome.status in ("crashed", "error"):
                self.status = "error"
                self.error_message = outcome.message
                self._say(outcome.message)
            elif outcome.status in ("finished", "cancelled"):
                self.status = outcome.status
        return events

    def import_round(self, index: int) -> None:
        """Read round ``index`` of the current job and put it into the result node (one undo state when the
        scene records undo: Slicer's scene undo is off unless the user or a module turns it on)."""
        started = time.perf_counter()
        data = self.job.load_round(index, probabilities=False)
        if not data.geometry.matches(self.geometry):
            raise SparseSegError(_("round {index} is not on the volume's grid ({difference})").format(
                index=index, difference=data.geometry.describe_difference(self.geometry)),
                _("This is a bug: please report it with the job folder."))
        scene = self.result_node.GetScene()
        if scene is not None and scene.GetUndoFlag():
            scene.SaveStateForUndo()
        mrml.write_label_to_segments(self.result_node, data.label, self.ras_matrix, self.segment_ids,
                                     tags={ROUND_TAG: str(index)})
        self.result_node.SetAttribute(ROUND_TAG, str(index))
        self.last_imported_label = data.label
        self.last_suggestion = SuggestedSlice.from_record(data.record)
        self.imported_rounds.append(index)
        uncertainty = data.record.get("files", {}).get("uncertainty")
        if self.settings.save_uncertainty and uncertainty:
            from ..io import read_image

            values, _geometry = read_image(self.job.directory / uncertainty)
            if self.uncertainty_node is None:
                self.uncertainty_node = self.scene.AddNewNodeByClass(
                    "vtkMRMLScalarVolumeNode", f"{self.volume_node.GetName()} SparseSeg uncertainty")
            mrml.set_volume_from_array(self.uncertainty_node, values, self.ras_matrix)
            self.uncertainty_node.SetAndObserveTransformNodeID(self.volume_node.GetTransformNodeID())
        self.timings["import_s"] = time.perf_counter() - started

    # -- annotate next ----------------------------------------------------------------------------

    def suggested_slice(self) -> annotate_next.SliceSuggestion | None:
        """The slice the newest imported round is least sure of, placed in world RAS (see
        :mod:`.annotate_next`); None before the first round, when the method gave none, or once that slice
        is ground truth (the user painted it and pressed Continue, and no newer round has come yet)."""
        suggested = self.last_suggestion
        if suggested is None or self.ras_matrix is None or self.image is None:
            return None
        if self.annotated_mask is not None:
            others = tuple(a for a in range(3) if a != suggested.axis)
            if 0 <= suggested.index < self.image.shape[suggested.axis] and \
                    np.all(self.annotated_mask, axis=others)[suggested.index]:
                return None
        return annotate_next.locate(suggested, self.ras_matrix, self.image.shape,
                                    annotate_next.to_world_matrix(self.volume_node))

    def jump_to_suggested_slice(self) -> tuple[annotate_next.SliceSuggestion, list[str]]:
        """Centre the slice views on the suggested slice: ``(suggestion, names of the views showing it)``."""
        suggestion = self.suggested_slice()
        if suggestion is None:
            raise SparseSegError(_("no slice is suggested yet"),
                                 _("Wait for a round: each names the slice it is least sure of."))
        views = annotate_next.jump_slice_views(self.scene, suggestion)
        self._say(annotate_next.describe_jump(suggestion, views))
        return suggestion, views

    # -- progress ---------------------------------------------------------------------------------

    def planned_rounds(self) -> int:
        """Rounds the running stage will end at: the job's count, or the method's plan once the worker has said it."""
        job = self.job
        if job is not None and job.spec.rounds is not None:
            return int(job.spec.rounds)
        return max(self.planned, max(self.imported_rounds, default=0))

    def progress(self) -> tuple[float, str]:
        """``(fraction 0..1 of the planned rounds, one line: round, step, ETA)`` for a progress bar."""
        job = self.job
        if job is None:
            return 0.0, _("not started")
        return progress_line(self.status, max(self.imported_rounds, default=0), self.planned_rounds(),
                             self.last_progress, bool(self.pending_rounds))

    # -- stop, continue, accept --------------------------------------------------------------------

    def cancel(self, grace_s: float = 10.0) -> None:
        """Stop: ask the worker to stop at its next step (CANCEL file; SIGTERM then a tree kill follow
        from :meth:`poll` if it does not). Complete rounds stay; one in progress is dropped."""
        job = self.job
        if job is not None and job.is_running():
            job.cancel(grace_s=grace_s, block=False)
            self.status = "stopping"
            self._say(_("stop requested: the worker ends at its next training step"))

    def result_label(self) -> np.ndarray:
        """The result node's class segments as a label map on the volume grid (the user's edits included)."""
        segmentation = self.result_node.GetSegmentation()
        values = sorted(self.segment_ids)
        present = [v for v in values if segmentation.GetSegment(self.segment_ids[v]) is not None]
        exported = mrml.export_segments(self.result_node, [self.segment_ids[v] for v in present], self.volume_node)
        label = np.zeros_like(exported)
        for position, value in enumerate(present, start=1):
            label[exported == position] = value
        return label

    def find_corrections(self) -> tuple[dict[int, list[int]], np.ndarray]:
        """``({axis: slices}, current label)``: the slices that hold every voxel where the result node differs
        from the last imported round, in whichever view they were edited where the method takes that
        (:func:`.corrections.corrected_planes`), else across the annotation's slice axis."""
        if self.last_imported_label is None:
            raise SparseSegError(_("no round has been imported yet"), _("Wait for the first round before correcting."))
        current = self.result_label()
        return corrected_planes(current != self.last_imported_label, self.slice_axis, self.settings.method), current

    def continue_session(self, rounds: int | None = None) -> Job:
        """Continue: corrected slices become ground truth; a new stage resumes from the last checkpoint
        and trains ``rounds`` more rounds (the job's rounds stay null where the method decides). The stage is
        made by :func:`~SparseSegLib.jobs.continuation.continue_job`, as ``sparseseg run --continue`` makes it."""
        previous = self.job
        if previous is None:
            raise SparseSegError(_("nothing to continue"), _("Press Start first."))
        if previous.is_running() or self.pending_rounds:
            raise SparseSegError(_("the worker is still running"), _("Wait for it to finish or press Stop first."))
        done = layout.last_complete_round(previous.directory)
        if done == 0 or not layout.checkpoints(previous.directory).get(done):
            raise SparseSegError(_("the previous stage left no complete round to continue from"),
                                 _("Start again (the first round was not finished)."))
        planes, current = self.find_corrections()
        label, mask = self.annotation_label, self.annotated_mask
        for axis, slices in planes.items():
            label, mask = continuation.paste_slices(label, mask, current, axis, slices)
        more = rounds if rounds is not None else self.settings.continue_rounds  # None: the method's or 2 more
        stage = len(self.jobs) + 1
        job = continuation.continue_job(previous.directory, self.root / f"stage-{stage}", label, mask,
                                        more_rounds=more, parameters=self.settings.parameters(),
                                        device=self.settings.device)
        self.jobs.append(job)
        self.annotation_label, self.annotated_mask = label, mask
        main, slices, across = continuation.split_planes(planes, self.slice_axis, current)
        self.corrections.append({"stage": stage, "axis": main, "slices": slices, "across": across})
        planned = (_("until the method is done") if job.spec.parameters.get("rounds") is None
                   else _("{count} more round(s)").format(count=more))
        self._say((_("continue: corrected slices become ground truth, {where}; {planned} from round {round}")
                   if planes else _("continue: no corrected slice; {planned} from round {round}")).format(
                       where=describe_planes(planes), planned=planned, round=done))
        self._start_job(job, resume=True)
        return job

    def accept(self) -> None:
        """Accept the result as it is: stop a running worker, keep the node, end the session."""
        self.cancel(grace_s=2.0)
        if self.result_node is not None:
            self.result_node.SetAttribute("SparseSeg.Accepted", "true")
        self.status = "accepted"
        self._say(_("result accepted"))

    def close(self, block: bool = True) -> None:
        """Stop the worker for good (when the module or the scene closes); nobody polls this session afterwards,
        so it stops counting as running once the worker has exited."""
        if self.status in ("running", "stopping"):
            self.status = "cancelled"
        job = self.job
        if job is not None and job.is_running():
            if block:
                with contextlib.suppress(Exception):
                    job.cancel(grace_s=5.0, term_grace_s=3.0, block=True)
            else:
                job.cancel(grace_s=5.0, block=False)
