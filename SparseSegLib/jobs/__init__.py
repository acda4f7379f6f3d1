"""The job protocol between the GUI (or command line) and the training worker.

* :mod:`.schema`: ``job.json``, versioned and validated (standard library only; the checks' helpers in
  :mod:`.checking`);
* :mod:`.layout`: the files of a job folder and which rounds are complete;
* :mod:`.events`: ``events.jsonl`` writer and non-blocking reader;
* :mod:`.atomic`: atomic file writes (temporary name, fsync, rename);
* :mod:`.regions`: the annotated mask of painted slices or ROI boxes (numpy);
* :mod:`.client`: start / poll / cancel / resume jobs (:mod:`.creation` creates them, :mod:`.results` loads
  their rounds); :mod:`.processes` starts the child Pythons;
* :mod:`.continuation`: the next stage of a job, with newly painted slices as ground truth;
* :mod:`.suggestion`: the slice a round is least sure of (annotate next).

None of these import torch; the worker (:mod:`SparseSegLib.worker`) does, after validating the job.
"""

from .events import EventReader, EventWriter, format_event, read_events, validate_event  # noqa: F401
from .schema import SCHEMA_VERSION, JobSpec, make_job, read_job, validate_job  # noqa: F401
