"""The interactive benchmark: SparseSeg played by a simulated user on real scans, as a clinician uses the module.

    python -m SparseSegLib.benchmarks.interactive --out bench-output/interactive [--jobs 2] [--resume]
    make bench-interactive

Why it exists (issue 19): the module's single-scan path is what a user meets first, and cohort benchmarks say
nothing about it. For each scan the simulated user

1. paints the object's central slice along k (array axis 0; ``--axis`` for another view) as a whole: every class
   and the background of that slice (:mod:`.scans`);
2. presses Start: the exact job the Slicer module creates with its defaults (:mod:`SparseSegLib.defaults`, with
   ``--method`` / ``--option`` / ``--parameter`` overrides for candidates), run by a real worker process; every
   streamed round is scored against the full reference, and the wall-clock time from Start to the first and the
   final round is recorded (:mod:`.user`);
3. corrects: paints one more whole slice (the reference on it) and presses Continue, through the same library
   path as the module and ``sparseseg run --continue`` (:mod:`SparseSegLib.jobs.continuation`), until 5 slices
   are painted; the final round of each stage is scored. The next slice is the one the method suggests
   (``round.json`` ``suggested_slice``) or, as an upper bound, the most wrong one (:mod:`.next_slice`), across
   the painted axis or ``--correct-axis`` (a user who corrects in another view).

Beside it, Slicer's own tools with the same number of slices, evenly spread over the object's extent as a user
would paint them: Fill between slices (ITK morphological contour interpolation) and copying the painted slices
through the object's extent (:mod:`.baselines`). :mod:`.report` writes ``report.md`` and a PNG; ``results.json``
holds every figure. Scans are chosen by a seeded order with disjoint ``dev`` and ``report`` parts, so settings
picked on one are reported on the other (:mod:`.scans`).
"""
