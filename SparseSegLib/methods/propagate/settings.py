"""The ``propagate`` method's options (``--option KEY=VALUE`` / a job's ``method_options``), checked up front."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...errors import SparseSegError
from ..option_parsing import parse_settings, slice_axes
from .suggestion import RULES as SUGGESTION_RULES

FUSIONS = ("intersection", "near", "average", "network", "registration")
SUGGESTIONS = (*SUGGESTION_RULES, "entropy")
CLASS_SOURCES = ("fused", "registration", "auto")
#: ``classes=auto`` takes the classes from the registration when the painted classes' intensities separate
#: less than this (|2 AUC - 1| of the least separated pair; 1: perfectly, 0: not at all).
AUTO_CLASS_SEPARATION = 0.9
EMPTY_GAPS = ("fade", "linear")
END_SHAPES = ("cut", "taper")
INTENSITY_GATES = ("likelihood", "chain", "none")


@dataclass(frozen=True)
class PropagateSettings:
    """Why each default: chosen on the interactive benchmark's development scans (docs/results/interactive.md).

    * ``demons_iterations`` / ``demons_smoothing``: per neighbouring-slice pair; stiffer fields drift less.
    * ``demons_levels``: coarse-to-fine levels of each slice pair's demons registration; 0 (the default) takes
      them from the voxel spacing (:func:`~SparseSegLib.engine.propagation.demons_levels_for`): one on scans with
      nearly isotropic voxels, two or three where slices lie 2-8 times as far apart as pixels (thick-slice MRI and
      CT), whose outlines move several pixels from slice to slice. Twentieth session, left-atrium dev scans as
      2.5 mm slices: registration round 0.762 -> 0.786 (docs/results/interactive.md).
    * ``demons_max_pixels``: a crop's slices larger than this are registered on a grid coarser by a power of two
      that brings them under it, the fields resampled back (0: always the full grid;
      :func:`~SparseSegLib.engine.propagation.registration_shrink`). 256 x 256: no scan the benchmarks here play reaches
      it (whole slices of at most 240 x 240 = 57,600 pixels), so it changes nothing measured there; on a CT-sized
      scan with a large object it cuts the registration round about threefold (a 512 x 512 x 300 scan: 391 s ->
      120 s, Dice 0.698 -> 0.713; docs/results/interactive.md, "Twenty-fourth session").
    * ``network_max_pixels``: the same cap for the network round, off by default (0): a crop's slices larger than
      this are shrunk in-plane by the same rule before the networks train and predict, their probabilities
      interpolated back (:mod:`.network_grid`). The networks' training costs the same on any grid, their prediction
      grows with the voxels. Measured at 65536 (twenty-fifth session, docs/results/interactive.md): a 512 x 512 x
      300 scan's final result 328 -> 269 s but Dice 0.781 -> 0.772; dev scans with 3 times finer pixels, left
      atrium 0.852 -> 0.851, mni152 with 2 times finer pixels class mean 0.740 -> 0.730, 6-9% faster. A user who
      would rather wait less on a very large object sets it; the default keeps the accuracy.
    * ``open_end``: beyond the outermost painted slices the propagated object fades out over this many of its
      own equivalent radii (0: never; :func:`~SparseSegLib.engine.propagation.open_end_reach`): a size prior, since
      registration cannot see where an object ends. Measured again in the twenty-ninth session (dev scans, one
      slice): 3 lets an object painted across its length-wise axis come back less short (left atrium across i
      0.719 -> 0.775, hippocampus across j merged 0.627 -> 0.767) for a little across k (0.846 -> 0.842, class mean
      0.430 -> 0.417), but costs the hippocampus's corrections (the first suggested slice goes more often to the
      posterior side the painted slice already holds: ``make demo``'s class mean after the correction 0.662 -> 0.524,
      2 of 3 scans posterior instead of 1; dev scans after 3 slices 0.822 -> 0.809), so 2 stays the default; 3 is
      for an object long along the painted slices' normal. docs/results/interactive.md, "Twenty-ninth session".
    * ``iterations``: training steps of the 2D network per stage (batch ``batch_size``); a few hundred are
      enough for one scan's painted slices and keep the stage within a minute or two on two CPU cores.
    * ``pseudo_distance``: slices this far (as a fraction of the depth) from a painted slice lend their
      propagated labels to the network's training, weighted by closeness and confidence; farther ones only
      lend background far from the propagated object (``negative_weight``, ``negative_margin`` pixels away).
      0.25 was tried as the default in the ninth session (hippocampus class split better, left atrium and mni152
      worse on the report scans; docs/results/interactive.md) and reverted.
    * ``network_axes``: the slice directions the network branch learns and predicts across, averaged ("0": the
      painted slices' own; "0,1,2": also the two orthogonal ones, which see the object's ends in profile).
    * ``fusion``: ``intersection`` keeps a voxel where the network and the registration agree (the
      collaborative-learning seed's certain region), which stops both a network's blobs far away and a
      registration chain that runs past the object's end; ``near`` lets the network decide within
      ``fusion_margin`` pixels (in-plane) of the registration's object; ``average`` averages their probabilities.
      ``object_threshold`` (``average``): a voxel is object only where the averaged object probability exceeds
      it (0.5: the plain argmax). 0.6 since the tenth session: where one branch is sure and the other unsure the
      voxel is usually an over-extension (the left atrium's narrowing ends); best mean over the left-atrium and
      hippocampus dev scans with 1 and with 3 painted slices (docs/results/interactive.md, "Tenth session").
    * ``end_opening``: beyond the outermost painted slices the network round's result keeps only what a ball of
      this fraction of the painted slices' thickness (their largest inscribed radius) fits into (a 3D
      morphological opening, :func:`.fusion.open_ends`; 0: off), which cuts narrow over-extensions at an
      object's ends (the left atrium into its veins). 0.15 since the twelfth session: dev scans, left atrium
      from one slice 0.818 -> 0.846, from three 0.888 -> 0.896, hippocampus unchanged (its ball is under a
      voxel); 0.2-0.25 score the same mean but cost the hippocampus from one slice 0.012, so the smallest ball
      that no dev setting pays for. Sized by thickness, not area: a ball sized by the painted area shaves a
      brain's gyri (mni152 class mean 0.760 -> 0.715 at 0.1 of the equivalent radius; 0.754 at this default).
      docs/results/interactive.md, "Twelfth session".
    * ``classes`` (several foreground classes): ``fused`` takes each object voxel's class from the fused
      probabilities, ``registration`` from the registration wherever it reached (the painted split between
      an object's parts travels with it; the networks still decide what is object); ``auto``: ``registration``
      where the painted classes' intensities hardly separate (parts of one structure, such as the hippocampus'
      anterior and posterior parts: |2 AUC - 1| 0.005-0.76 on the dev scans), ``fused`` where the image draws
      the boundary (tissues such as mni152's grey and white matter: 0.995); :func:`.fusion.class_separation`.
      ``auto`` since the twelfth session: hippocampus dev scans, class mean from one slice 0.420 -> 0.430 (the
      round drop the issue bounds narrows), from three 0.809 -> 0.804; mni152 keeps ``fused`` (0.754; 0.692
      with ``registration``); one class: no effect. docs/results/interactive.md, "Twelfth session". Where the
      registration runs coarse to fine (``demons_levels``), the split comes from a one-level chain, the object
      still from the coarse-to-fine one (twentieth session: coarse fields move a split the image does not show).
    * ``anchor``: keep only 3D components of the result that touch painted foreground (a result never has
      blobs the painting cannot reach).
    * ``empty_gap``: a gap closed by a painted slice without the object (a user marking where it has ended):
      ``fade`` carries the object from its side as an open end stopped there, ``linear`` blends it away
      towards the empty slice like any gap (:func:`~SparseSegLib.engine.propagation.propagate_slices`).
    * ``end_shape``: how an open end fades: ``cut`` (whole slices drop out at about 0.83 ``open_end`` radii) or
      ``taper`` (each slice shrinks towards its core, gone at ``open_end`` radii).
    * ``intensity``: ``likelihood`` updates the registration's object probability by the likelihood ratio of
      each voxel's intensity under the painted object's and background's histograms
      (:mod:`~SparseSegLib.engine.intensity_gate`), which trims what the chain carried over tissue that does not
      look like the object; ``chain`` applies the same update inside the chain as well, trimming only, on every
      slice before it travels on (:meth:`~SparseSegLib.engine.intensity_gate.IntensityEvidence.trim`; the default: best on
      both dev data sets, docs/results/interactive.md); ``none`` keeps the registration as it is.
      ``intensity_ring``: the background sample is the painted background within this many pixels of the painted
      object (0: all of the painted slices' crop).
    * ``suggest``: the slice to paint next: ``volume`` (the slice that brings the most predicted object closest
      to the paint, :mod:`.suggestion`; the default since the ninth session, dev scans: one correction lifts the
      hippocampus class mean to 0.706 against 0.450, the left atrium to 0.844 against 0.838), ``gap`` (middle of
      the widest unpainted stretch of the predicted object) or ``entropy`` (the worker's least-certain slice).
    * ``crop_margin``: work in the painted foreground's in-plane bounding box grown by this fraction of its
      size on each side (at least ``min_margin`` pixels); nothing outside it is labelled.
    """

    demons_iterations: int = 100
    demons_smoothing: float = 1.0
    demons_levels: int = 0
    demons_max_pixels: int = 65536
    network_max_pixels: int = 0
    open_end: float = 2.0
    iterations: int = 300
    batch_size: int = 8
    patch: int = 128
    context_slices: int = 1
    pseudo_distance: float = 0.12
    negative_weight: float = 0.5
    negative_margin: int = 5
    network_axes: str = "0,1,2"
    fusion: str = "average"
    fusion_margin: int = 2
    object_threshold: float = 0.6
    end_opening: float = 0.15
    classes: str = "auto"
    empty_gap: str = "linear"
    end_shape: str = "cut"
    anchor: bool = True
    crop_margin: float = 0.5
    min_margin: int = 16
    suggest: str = "volume"
    intensity: str = "chain"
    intensity_ring: int = 0
    seed_offset: int = 0

    @property
    def axes(self) -> tuple[int, ...]:
        """``network_axes`` as axes of the painted volume (0 = across the painted slices)."""
        return slice_axes(self.network_axes, "network_axes")

    @classmethod
    def parse(cls, extra: dict | None) -> PropagateSettings:
        """Settings from a method-options dict; unknown keys and bad values are errors that say what is allowed."""
        return parse_settings(cls, extra, "propagate")

    def check(self) -> None:
        slice_axes(self.network_axes, "network_axes")  # raises on a bad list
        if self.suggest not in SUGGESTIONS:
            raise SparseSegError(f"unknown suggest {self.suggest!r}", f"Use one of: {', '.join(SUGGESTIONS)}.")
        if self.classes not in CLASS_SOURCES:
            raise SparseSegError(f"unknown classes {self.classes!r}", f"Use one of: {', '.join(CLASS_SOURCES)}.")
        if self.empty_gap not in EMPTY_GAPS:
            raise SparseSegError(f"unknown empty_gap {self.empty_gap!r}", f"Use one of: {', '.join(EMPTY_GAPS)}.")
        if self.end_shape not in END_SHAPES:
            raise SparseSegError(f"unknown end_shape {self.end_shape!r}", f"Use one of: {', '.join(END_SHAPES)}.")
        if self.intensity not in INTENSITY_GATES:
            raise SparseSegError(f"unknown intensity {self.intensity!r}", f"Use one of: {', '.join(INTENSITY_GATES)}.")
        if self.fusion not in FUSIONS:
            raise SparseSegError(f"unknown fusion {self.fusion!r}", f"Use one of: {', '.join(FUSIONS)}.")
        positive = ("demons_iterations", "iterations", "batch_size", "patch")
        for name in positive:
            if getattr(self, name) < 1:
                raise SparseSegError(f"option {name} must be at least 1, not {getattr(self, name)}", f"Give {name} >= 1.")
        if self.patch % 8:
            raise SparseSegError(f"option patch must be a multiple of 8, not {self.patch}", "E.g. patch=128.")
        if not 0.5 <= self.object_threshold < 1.0:
            raise SparseSegError(f"option object_threshold must be in [0.5, 1), not {self.object_threshold}",
                                 "E.g. object_threshold=0.6 (0.5: the plain argmax of the average).")
        if not 0 <= self.demons_levels <= 5:
            raise SparseSegError(f"option demons_levels must be 0 (from the voxel spacing) to 5, "
                                 f"not {self.demons_levels}",
                                 "E.g. demons_levels=0 (the default) or demons_levels=2.")
        for name in ("open_end", "end_opening", "pseudo_distance", "negative_weight", "crop_margin", "demons_smoothing"):
            if getattr(self, name) < 0:
                raise SparseSegError(f"option {name} must not be negative", f"Give {name} >= 0.")
        for name in ("demons_max_pixels", "network_max_pixels"):
            if getattr(self, name) < 0:
                raise SparseSegError(f"option {name} must not be negative", f"E.g. {name}=65536 (0: never shrink).")
        if min(self.context_slices, self.negative_margin, self.min_margin, self.fusion_margin, self.intensity_ring) < 0:
            raise SparseSegError("context_slices, negative_margin, min_margin, fusion_margin and intensity_ring must not "
                                 "be negative", "Give values >= 0.")


def job_settings(options) -> PropagateSettings:
    """The settings a job runs with: its method options over the defaults, and where those leave ``iterations``,
    ``batch_size`` or ``patch`` unset, the job's own parameters (``iterations_per_round``, else ``iterations``;
    ``batch_size``; the smallest side of ``patch_size``).

    Why: those parameters are what `sparseseg run --iterations-per-round/--batch-size` and the module's fields set,
    and what the worker halves after running out of GPU memory; this method used to ignore them, so the Start
    default trained its 300 steps whatever was asked and its out-of-memory retry ran with the same batch again.
    ``options`` is a :class:`~SparseSegLib.methods.base.MethodOptions`; the Start button sets none of them."""
    settings = PropagateSettings.parse(options.extra)
    given = set(options.extra or {})
    overrides: dict = {}
    iterations = options.iterations_per_round or options.iterations
    if iterations and "iterations" not in given:
        overrides["iterations"] = int(iterations)
    if options.batch_size and "batch_size" not in given:
        overrides["batch_size"] = int(options.batch_size)
    if options.patch_size and "patch" not in given:
        overrides["patch"] = max(8, min(int(p) for p in options.patch_size) // 8 * 8)
    return replace(settings, **overrides) if overrides else settings

