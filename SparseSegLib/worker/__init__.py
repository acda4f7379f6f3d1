"""The training worker: ``python -m SparseSegLib.worker [--resume] JOBDIR`` (also ``sparseseg run``).

Reads and validates ``JOBDIR/job.json`` (:mod:`.jobs.schema`), loads the image and the user's
annotation (deriving the annotated mask as in 3D Slicer, :mod:`.jobs.regions`), runs the method round
by round (:func:`~SparseSegLib.methods.base.iter_rounds`) and after every round writes, in this order:

1. ``rounds/NNN/label.nrrd`` (and optional probability / uncertainty maps), each atomically;
2. ``checkpoint/round-NNN.pt``: the method's resumable state (``torch.load(weights_only=True)``-safe);
3. ``rounds/NNN/round.json`` (atomic, fsynced): the commit point, a round is complete iff it exists;
   it also names the slice to annotate next, the one the round is least sure of (:mod:`.jobs.suggestion`);
4. a ``round`` event; then older checkpoints are pruned.

So ``kill -9`` loses at most the round in progress, and ``--resume`` continues after the newest
complete round, discarding the half-written one and leaving earlier rounds' files untouched.

Stopping: a ``CANCEL`` file or SIGTERM/SIGINT is noticed at the next training step (or round
boundary) and ends in a ``cancelled`` event, exit code 3. Errors: a :class:`SparseSegError` (bad
job, missing input, out of memory twice, disk full) ends in an ``error`` event with message and hint,
exit code 2; anything else is a bug: traceback in ``worker.log``, an ``error`` event of kind
``internal``, exit code 1. Out of GPU memory is retried once with half the batch (half the patch when
the batch is already 1) from the last complete round, then reported with a hint to use the CPU.

This package imports torch only after the job has been validated (so a bad job fails in a fraction of
a second) and never imports Slicer, VTK or Qt.

Test hook: the environment variable ``SPARSESEG_TEST_FAULT`` injects faults at the first training
step, because out-of-memory and crashes cannot be produced on demand on a CPU-only machine:
``oom`` (every step raises ``torch.OutOfMemoryError``), ``oom-once`` (only the first step does) and
``bug`` (a RuntimeError). Never set it outside tests.

Modules: :mod:`.control` (stop requests, the job lock, the log), :mod:`.inputs`, :mod:`.runner` (the run loop),
:mod:`.rounds` (writing a round), :mod:`.memory` (out of memory), :mod:`.reporting` (events), :mod:`.entry`
(``run_job`` and the command line).
"""

from .control import JobCancelled, JobLock, StopRequest, WorkerLog, with_kind
from .entry import main, run_job
from .inputs import read_job_case
from .memory import is_out_of_memory, reduce_memory
from .reporting import EventReporter
from .rounds import CHECKPOINT_FORMAT, RoundWriter
from .runner import FAULT_ENV, FAULTS, Worker

__all__ = ["CHECKPOINT_FORMAT", "EventReporter", "FAULTS", "FAULT_ENV", "JobCancelled", "JobLock", "RoundWriter",
           "StopRequest", "Worker", "WorkerLog", "is_out_of_memory", "main", "read_job_case", "reduce_memory",
           "run_job", "with_kind"]
