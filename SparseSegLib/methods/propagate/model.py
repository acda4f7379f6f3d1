"""Save model for ``propagate``: the stage's three 2D networks as one model folder that ``predict`` / Apply read.

A job trains each network on the painted volume (the painted axis moved to the front, cropped around the paint,
z-scored over the crop) across one axis of that frame. The model maps each network back to the axis of the
scan's own array it ran across (and notes where its two in-plane axes were the other way round), so the saved
:class:`~SparseSegLib.engine.axis_ensemble.AxisEnsemble` averages them over a new scan as the job did. Without the
registration branch and the crop, a saved model is the network half of the job: it segments other scans of the
same kind, not as well as the job's own fused result (the crop's z-score becomes the whole scan's, and the
networks never saw what lies outside the crop: the model keeps the largest connected objects, as many as the job's
result holds, holes filled unless the job's paint showed background enclosed by the object, as the job keeps
what touches the paint).
"""

from __future__ import annotations

from dataclasses import replace

from ...case import Case
from ...engine.axis_ensemble import AxisEnsemble, scan_axes
from ...engine.model import Segmenter
from ...engine.networks import build_network, default_patch_size
from ...engine.postprocess import without_fill
from ...engine.spacing import training_spacing
from ...errors import SparseSegError
from ...jobs.regions import propagation_axis
from ..base import MethodOptions
from .network import network_config
from .settings import PropagateSettings
from .volume import class_count


def segmenter_from_state(case: Case, options: MethodOptions, state: dict) -> Segmenter:
    """The model in a ``propagate`` round state (``state["network"]``: weights keyed ``"<frame axis>.<name>"``)."""
    settings = PropagateSettings.parse(options.extra)
    weights = state.get("network") or {}
    if not weights:
        raise SparseSegError("this job has no trained network yet (only the registration round has run)",
                             "Wait for the stage's network round, then save the model.")
    # the axis the job propagated along, also where slices were painted across several axes (a correction in
    # another view): its networks learnt in that axis' frame
    painted = propagation_axis(case.annotated, case.label) if case.annotated is not None else None
    first = 0 if painted is None else int(painted)
    num_classes = class_count(case)
    config = network_config(settings)
    frame_axes = sorted({int(k.split(".", 1)[0]) for k in weights})
    members = []
    for frame_axis in frame_axes:
        own = {k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".", 1)[0] == str(frame_axis)}
        network = build_network(config, num_classes)
        try:
            network.load_state_dict(own)
        except RuntimeError as error:
            raise SparseSegError(f"the checkpoint does not fit propagate's network ({str(error).splitlines()[0][:160]})",
                                 "The job's options changed since the checkpoint was written; run the job again.") from None
        members.append(network)
    # each member saw its slices in the painted frame; prediction moves the scan's own axis to the front
    axes, swap = scan_axes(frame_axes, first)
    config = replace(config, axes=axes, swap_in_plane=swap if any(swap) else ())
    network = AxisEnsemble(members, tuple(axes)) if len(members) > 1 else members[0]
    # the patch serves a member across the array's axis 0; the others size their own (engine.inference)
    return Segmenter(network=network, network_config=config, patch_size=default_patch_size(case.image.shape, config),
                     class_names=dict(case.class_names), normalization="zscore", method="propagate",
                     class_colors=dict(case.class_colors),
                     postprocess=without_fill("lcc-fill") if state.get("holes") else "lcc-fill",
                     objects=int(state.get("objects") or 1),
                     spacing=training_spacing([_network_spacing(case, first, state)]))


def _network_spacing(case: Case, painted_axis: int, state: dict) -> tuple[float, float, float]:
    """The spacing (k, j, i) the networks learnt at: the scan's, coarser in the painted slices' plane where the job
    ran its networks on a coarser grid (``network_grid``), so the model predicts a scan like this one there too."""
    factor = int(state.get("network_grid", 1))
    return tuple(float(s) * (factor if axis != painted_axis else 1)
                 for axis, s in enumerate(case.geometry.spacing_kji))
