"""Make the extension's screenshot (``Resources/Screenshots/1.png``, EXTENSION_SCREENSHOTURLS) from real parts.

Left: the module panel, ``SparseSeg/Resources/UI/SparseSeg.ui`` loaded by PySide6's QUiLoader on Qt's offscreen
platform. Slicer's custom widgets are unknown to plain Qt, so stand-ins are registered under their names:
``ctkCollapsibleButton`` (a button-like header with an arrow above its contents, collapsed when the .ui says so),
``qMRMLNodeComboBox`` (a combo box showing the selected node's name) and ``qMRMLWidget`` (a plain widget). Every
other widget, text, tooltip and layout is the .ui's own. The panel is filled with the state the module shows while
a job streams: the choices of ``SparseSegLib.session.settings``, the job's method, the buttons enabled as
``SparseSegWidget.updateButtons`` enables them while a worker runs, the progress line from
``Session.progress`` and the log lines from ``format_event`` over the job's real ``events.jsonl``. Slicer's own
"Help & Acknowledgement" section (added by the module panel) is drawn collapsed on top.

Right: a red (axial) slice view, rendered by VTK offscreen (an EGL or OSMesa render window): the job's input
volume and one streamed round (``rounds/NNN/label.nrrd``) resliced by ``vtkImageReslice`` on the view's pixel
grid (linear for the volume, nearest for the label map), the volume through ``vtkImageMapToWindowLevelColors``,
the classes through a ``vtkLookupTable`` as Slicer draws segments in 2D (fill 50 %, outline opaque), three
``vtkImageActor`` layers under a parallel camera, Slicer's corner annotation; the slice controller bar above it
is a Qt strip in Slicer's red. If VTK renders nothing (no offscreen OpenGL) the script stops and says so.

Usage (from the repository root; needs PySide6, vtk, SimpleITK)::

    QT_QPA_PLATFORM=offscreen python Resources/Screenshots/make_screenshot.py --job JOB_FOLDER [--round N]

``JOB_FOLDER`` is a worker job folder (``job.json``, ``inputs/image.nrrd``, ``rounds/NNN/label.nrrd``,
``events.jsonl``). ``make demo`` writes some under ``demo-output/jobs/`` (the default, a hippocampus crop);
the committed 1.png shows the mni152 job of ``make bench-interactive`` (docs/extension-index.md names the command).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
UI = ROOT / "SparseSeg" / "Resources" / "UI" / "SparseSeg.ui"
DEFAULT_JOB = ROOT / "demo-output" / "jobs" / "hippocampus_001" / "stage-2"
DEFAULT_OUT = ROOT / "Resources" / "Screenshots" / "1.png"

#: Slicer's red slice view colour (vtkMRMLSliceNode's "Red" layout colour, 0.952941, 0.290196, 0.2).
SLICER_RED = (243, 74, 51)
#: Segment display in 2D as Slicer's defaults draw it (vtkMRMLSegmentationDisplayNode: fill 0.5, outline 1.0).
FILL_OPACITY, OUTLINE_OPACITY = 0.5, 1.0


# --------------------------------------------------------------------------------------------------
# The job: what was streamed, and what the module showed at that moment


def newest_round(job: Path) -> int:
    rounds = sorted(int(p.name) for p in (job / "rounds").iterdir() if p.name.isdigit() and (p / "label.nrrd").is_file())
    if not rounds:
        raise SystemExit(f"{job}: no rounds/NNN/label.nrrd (run the job first)")
    return rounds[-1]


def module_state(job: Path, shown_round: int) -> dict:
    """The module's status line, progress and log at the moment round ``shown_round`` was imported and the next
    round trained (the latest progress event before the next round, if there is one), from the real events."""
    from types import SimpleNamespace

    from SparseSegLib.jobs.events import format_event, read_events
    from SparseSegLib.session.session import Session

    events = read_events(job / "events.jsonl")
    cut = next((n for n, e in enumerate(events) if e.get("event") == "round" and e.get("round") == shown_round), None)
    if cut is None:
        raise SystemExit(f"{job}: events.jsonl has no round {shown_round}")
    later = events[cut + 1:]
    following = next((n for n, e in enumerate(later) if e.get("event") in ("round", "finished", "cancelled", "error")),
                     len(later))
    progress = [e for e in later[:following] if e.get("event") == "progress"]
    last_progress = progress[len(progress) // 2] if progress else None  # mid-way through the next round
    seen = events[:cut + 1] + [e for e in later[:following] if e.get("event") != "progress"
                               and (last_progress is None or e["seq"] < last_progress["seq"])]
    planned = max((int(e["rounds"]) for e in seen + ([last_progress] if last_progress else []) if e.get("rounds")),
                  default=shown_round)
    imported = [int(e["round"]) for e in seen if e.get("event") == "round"]
    status = "running" if last_progress else next(
        (e["event"] for e in reversed(events) if e.get("event") in ("finished", "cancelled", "error")), "running")
    # Session.progress itself, on the attributes it reads
    view = SimpleNamespace(job=True, last_progress=last_progress, imported_rounds=imported, status=status,
                           pending_rounds=[], planned_rounds=lambda: planned)
    fraction, text = Session.progress(view)
    log = [format_event(e) for e in seen if e.get("event") != "progress"]
    return {"fraction": fraction, "text": text, "log": log, "running": status == "running",
            "round_event": events[cut]}


def suggestion_text(round_event: dict, ras_matrix: np.ndarray, shape) -> str:
    from SparseSegLib.jobs.suggestion import SuggestedSlice
    from SparseSegLib.session import annotate_next

    suggested = SuggestedSlice.from_record(round_event)
    if suggested is None:
        return ""
    located = annotate_next.locate(suggested, ras_matrix, shape, np.eye(4))
    return "; annotate next: {slice}".format(slice=located.describe())  # SparseSegWidget.showProgress


# --------------------------------------------------------------------------------------------------
# The slice view, rendered by VTK offscreen


def vtk_image(array: np.ndarray, vtk_type: int):
    """A ``(k, j, i)`` array as vtkImageData in index space (origin 0, spacing 1): reslicing maps RAS to it."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    flat = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True, array_type=vtk_type)
    data.GetPointData().SetScalars(flat)
    return data


def render_slice_view(image: np.ndarray, label: np.ndarray, ijk_to_ras: np.ndarray, colors: dict, slice_k: int,
                      size: tuple[int, int], corner_text: str) -> np.ndarray:
    """An axial slice through voxel slice ``slice_k`` as Slicer's red view shows it (patient right on the left,
    anterior up, the volume fitted to the view), returned as an RGB ``(height, width, 3)`` uint8 array."""
    import vtk
    from vtk.util import numpy_support

    width, height = size
    # Slice plane: Slicer's axial SliceToRAS (x -> -R, y -> A, normal S), centred on the volume's centre.
    corners = np.array([[i, j, k, 1.0] for i in (0, image.shape[2] - 1) for j in (0, image.shape[1] - 1)
                        for k in (0, image.shape[0] - 1)]) @ ijk_to_ras.T
    low, high = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
    centre = (low + high) / 2
    plane_s = (ijk_to_ras @ np.array([0, 0, slice_k, 1.0]))[2]
    extent_x, extent_y = high[0] - low[0], high[1] - low[1]
    mm_per_pixel = max(extent_x / width, extent_y / height) * 1.02
    slice_to_ras = np.array([[-1.0, 0, 0, centre[0]], [0, 1.0, 0, centre[1]], [0, 0, 1.0, plane_s], [0, 0, 0, 1]])
    axes = np.linalg.inv(ijk_to_ras) @ slice_to_ras  # output (mm on the plane) -> input voxel index
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, axes[r, c])

    def reslice(data, interpolation):
        filt = vtk.vtkImageReslice()
        filt.SetInputData(data)
        filt.SetResliceAxes(matrix)
        filt.SetOutputDimensionality(2)
        filt.SetOutputSpacing(mm_per_pixel, mm_per_pixel, 1.0)
        filt.SetOutputOrigin(-mm_per_pixel * (width - 1) / 2, -mm_per_pixel * (height - 1) / 2, 0.0)
        filt.SetOutputExtent(0, width - 1, 0, height - 1, 0, 0)
        filt.SetBackgroundLevel(0.0)
        if interpolation == "linear":
            filt.SetInterpolationModeToLinear()
        else:
            filt.SetInterpolationModeToNearestNeighbor()
        filt.Update()
        return filt.GetOutput()

    volume = reslice(vtk_image(image.astype(np.float32), vtk.VTK_FLOAT), "linear")
    labels = reslice(vtk_image(label.astype(np.uint8), vtk.VTK_UNSIGNED_CHAR), "nearest")

    # Background layer: window/level from the volume's intensities (Slicer's automatic window/level, roughly)
    inside = image[image > image.min()]
    lo, hi = np.percentile(inside if inside.size else image, [0.5, 99.5])
    grey = vtk.vtkImageMapToWindowLevelColors()
    grey.SetInputData(volume)
    grey.SetWindow(float(hi - lo) or 1.0)
    grey.SetLevel(float(hi + lo) / 2)
    grey.SetOutputFormatToRGBA()
    grey.Update()

    # Segments: fill, then an outline (label pixels next to another value, on the view's pixel grid)
    values = numpy_support.vtk_to_numpy(labels.GetPointData().GetScalars()).reshape(height, width)
    padded = np.pad(values, 1, mode="edge")
    edge = np.zeros_like(values, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy:dy + height, dx:dx + width] != values
    outline = np.where(edge, values, 0).astype(np.uint8)
    outline_data = vtk.vtkImageData()
    outline_data.DeepCopy(labels)
    outline_data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(outline.ravel(), deep=True,
                                                                      array_type=vtk.VTK_UNSIGNED_CHAR))

    def coloured(data, opacity):
        table = vtk.vtkLookupTable()
        table.SetNumberOfTableValues(256)
        table.SetTableRange(0, 255)
        for value in range(256):
            r, g, b = colors.get(value, (0.0, 0.0, 0.0))
            table.SetTableValue(value, r, g, b, opacity if value in colors else 0.0)
        table.Build()
        mapper = vtk.vtkImageMapToColors()
        mapper.SetInputData(data)
        mapper.SetLookupTable(table)
        mapper.SetOutputFormatToRGBA()
        mapper.Update()
        return mapper.GetOutput()

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    window.SetMultiSamples(0)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0, 0, 0)
    window.AddRenderer(renderer)
    for depth, layer in enumerate((grey.GetOutput(), coloured(labels, FILL_OPACITY),
                                   coloured(outline_data, OUTLINE_OPACITY))):
        actor = vtk.vtkImageActor()
        actor.GetMapper().SetInputData(layer)
        actor.InterpolateOff()  # one texel per screen pixel already
        actor.SetPosition(0, 0, depth * 0.1)
        renderer.AddActor(actor)
    annotation = vtk.vtkCornerAnnotation()
    annotation.SetText(0, corner_text)  # lower left, as Slicer's "B: <background volume>"
    annotation.GetTextProperty().SetColor(1.0, 1.0, 1.0)
    annotation.GetTextProperty().SetFontFamilyToArial()
    annotation.SetMaximumFontSize(14)
    annotation.SetLinearFontScaleFactor(2)
    annotation.SetNonlinearFontScaleFactor(1)
    renderer.AddViewProp(annotation)

    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    origin = volume.GetOrigin()
    cx = origin[0] + mm_per_pixel * (width - 1) / 2
    cy = origin[1] + mm_per_pixel * (height - 1) / 2
    camera.SetFocalPoint(cx, cy, 0)
    camera.SetPosition(cx, cy, 1000)
    camera.SetViewUp(0, 1, 0)
    camera.SetParallelScale(mm_per_pixel * height / 2)
    renderer.ResetCameraClippingRange()
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    shot = grab.GetOutput()
    pixels = numpy_support.vtk_to_numpy(shot.GetPointData().GetScalars()).reshape(height, width, 3)
    renderer_class = window.GetClassName()
    window.Finalize()
    if pixels.size == 0 or int(pixels.max()) == int(pixels.min()):
        raise SystemExit(f"VTK rendered an empty image with {renderer_class}: no usable offscreen OpenGL "
                         "(set VTK_DEFAULT_OPENGL_WINDOW to vtkEGLRenderWindow or vtkOSOpenGLRenderWindow)")
    print(f"slice view rendered by {renderer_class} ({width}x{height})")
    return np.ascontiguousarray(pixels[::-1])  # VTK rows start at the bottom


# --------------------------------------------------------------------------------------------------
# The module panel, Qt offscreen


def stand_in_classes():
    from PySide6.QtCore import Property, QPoint, QRect, QSize, Qt
    from PySide6.QtGui import QPainter
    from PySide6.QtWidgets import QComboBox, QPushButton, QStyle, QStyleOptionButton, QWidget

    class ctkCollapsibleButton(QPushButton):  # noqa: N801 - the .ui's class name
        """CTK's collapsible section as it looks: a button-like header (arrow, title) above its contents."""

        HEADER = 26

        def __init__(self, parent=None):
            super().__init__(parent)
            self._collapsed = False
            self.setContentsMargins(0, self.HEADER, 0, 0)
            self.setCheckable(False)
            self.setFocusPolicy(Qt.NoFocus)

        def _get_collapsed(self):
            return self._collapsed

        def _set_collapsed(self, value):
            self._collapsed = bool(value)

        collapsed = Property(bool, _get_collapsed, _set_collapsed)

        def apply_collapsed(self):
            if self._collapsed:
                for child in self.findChildren(QWidget):
                    child.hide()
                self.setFixedHeight(self.HEADER + 2)

        def sizeHint(self):  # noqa: N802 - Qt's name
            layout = self.layout()
            hint = layout.totalSizeHint() if layout is not None and not self._collapsed else QSize(200, self.HEADER + 2)
            return QSize(max(hint.width(), 200), hint.height())

        def minimumSizeHint(self):  # noqa: N802
            layout = self.layout()
            hint = layout.totalMinimumSize() if layout is not None and not self._collapsed else QSize(100, self.HEADER + 2)
            return hint

        def paintEvent(self, event):  # noqa: N802
            painter = QPainter(self)
            option = QStyleOptionButton()
            option.initFrom(self)
            option.rect = QRect(0, 0, self.width(), self.HEADER)
            option.state |= QStyle.State_Raised
            self.style().drawPrimitive(QStyle.PE_PanelButtonCommand, option, painter, self)
            arrow = QStyleOptionButton()
            arrow.initFrom(self)
            arrow.rect = QRect(6, (self.HEADER - 12) // 2, 12, 12)
            primitive = QStyle.PE_IndicatorArrowRight if self._collapsed else QStyle.PE_IndicatorArrowDown
            self.style().drawPrimitive(primitive, arrow, painter, self)
            painter.setPen(self.palette().buttonText().color())
            painter.drawText(QRect(24, 0, self.width() - 30, self.HEADER), Qt.AlignVCenter | Qt.AlignLeft, self.text())
            if not self._collapsed:
                painter.setPen(self.palette().mid().color())
                painter.drawRect(QRect(QPoint(0, self.HEADER), QPoint(self.width() - 1, self.height() - 1)))

    class qMRMLNodeComboBox(QComboBox):  # noqa: N801
        """A node selector showing its node's name ("None" when empty)."""

    class qMRMLWidget(QWidget):  # noqa: N801
        pass

    return ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget


def build_panel(state: dict, names: dict, method: str, width: int):
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    from SparseSegLib.session.settings import DEVICE_CHOICES, METHOD_CHOICES, ORIENTATION_CHOICES, REGION_CHOICES

    collapsible, node_combo, mrml_widget = stand_in_classes()
    loader = QUiLoader()
    for cls in (collapsible, node_combo, mrml_widget):
        loader.registerCustomWidget(cls)
    file = QFile(str(UI))
    file.open(QFile.ReadOnly)
    ui = loader.load(file)
    file.close()
    if ui is None:
        raise SystemExit(f"QUiLoader could not build {UI}: {loader.errorString()}")

    def child(name):
        found = ui.findChild(QWidget, name)
        if found is None:
            raise SystemExit(f"{UI} has no widget {name}")
        return found

    # Choice fields, filled as parameterNodeWrapper's QComboBox connector fills them
    choices = {"regionComboBox": (REGION_CHOICES, "slices"), "orientationComboBox": (ORIENTATION_CHOICES, "auto"),
               "methodComboBox": (METHOD_CHOICES, method), "networkComboBox": (("2d", "3d"), "2d"),
               "budgetComboBox": (("quick", "paper"), "quick"), "deviceComboBox": (DEVICE_CHOICES, "auto")}
    for name, (values, current) in choices.items():
        box = child(name)
        box.clear()
        box.addItems(list(values))
        box.setCurrentText(current)
    for name, node in names.items():  # node selectors
        box = child(name)
        box.addItem(node or "None")
    # Buttons as SparseSegWidget.updateButtons sets them while a worker streams rounds (or after it finished)
    running = state["running"]
    enabled = {"startButton": not running, "stopButton": running, "continueButton": not running,
               "acceptButton": True, "suggestedSliceButton": "annotate next" in state["text"],
               "saveModelButton": not running, "loadModelButton": True, "applyModelButton": False}
    for name, on in enabled.items():
        child(name).setEnabled(on)
    child("progressBar").setValue(int(round(100 * state["fraction"])))
    status = child("statusLabel")
    status.setText(state["text"])
    status.setWordWrap(True)
    log = child("logTextEdit")
    for line in state["log"]:
        log.appendPlainText(line)
    log.setFixedHeight(150)

    # The module panel: Slicer's collapsed "Help & Acknowledgement" above the module's widget
    panel = QWidget()
    layout = QVBoxLayout(panel)
    layout.setContentsMargins(6, 6, 6, 6)
    help_section = collapsible()
    help_section.setText("Help & Acknowledgement")
    help_section.collapsed = True
    layout.addWidget(help_section)
    layout.addWidget(ui)
    for section in [help_section] + ui.findChildren(collapsible):
        section.apply_collapsed()
    panel.setFixedWidth(width)
    return panel


def slice_controller(offset_text: str, position: float, width: int):
    """The red slice view's controller bar: pin, view name, slice slider, offset (Qt, Slicer's colours)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSlider

    bar = QFrame()
    bar.setFixedWidth(width)
    bar.setStyleSheet(f"QFrame {{ background: rgb{SLICER_RED}; }} QLabel {{ color: black; }}")
    layout = QHBoxLayout(bar)
    layout.setContentsMargins(4, 2, 4, 2)
    name = QLabel("R")
    name.setStyleSheet("font-weight: bold;")
    layout.addWidget(name)
    slider = QSlider(Qt.Horizontal)
    slider.setRange(0, 100)
    slider.setValue(int(round(100 * position)))
    layout.addWidget(slider, 1)
    layout.addWidget(QLabel(offset_text))
    return bar


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, default=DEFAULT_JOB, help="worker job folder (default: %(default)s)")
    parser.add_argument("--round", type=int, default=None,
                        help="round to show (default: the one before the newest, so the panel shows the next "
                             "round training; the newest when there is only one)")
    parser.add_argument("--slice", type=int, default=None,
                        help="axial voxel slice k to show (default: the unannotated slice with the most result)")
    parser.add_argument("--volume-name", default=None, help="the volume node's name (default: the job's case id)")
    parser.add_argument("--panel-width", type=int, default=430)
    parser.add_argument("--view-width", type=int, default=620)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not os.environ.get("DISPLAY"):  # no X server: VTK would try X first, warn, then fall back to EGL
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

    from SparseSegLib.io import read_image, read_label
    from SparseSegLib.visualize import default_class_colors

    job = args.job.resolve()
    spec = json.loads((job / "job.json").read_text())
    rounds = sorted(int(p.name) for p in (job / "rounds").iterdir() if p.name.isdigit())
    shown = args.round if args.round is not None else (rounds[-2] if len(rounds) > 1 else newest_round(job))
    image, geometry = read_image(job / spec["inputs"]["image"])
    label = read_label(job / "rounds" / f"{shown:03d}" / "label.nrrd", geometry)
    classes = spec.get("classes") or {}
    defaults = default_class_colors(range(1, int(label.max()) + 1))
    colors = {int(v): tuple(c.get("color") or defaults.get(int(v), (1.0, 1.0, 0.0))) for v, c in classes.items()}
    for value, color in defaults.items():
        colors.setdefault(value, color)
    ras = geometry.ijk_to_ras()

    slice_k = args.slice
    if slice_k is None:
        annotated = np.zeros(image.shape[0], dtype=bool)
        mask_path = (spec.get("region") or {}).get("mask")
        if mask_path and (job / mask_path).is_file():
            mask = read_label(job / mask_path, geometry)
            annotated = mask.reshape(mask.shape[0], -1).all(axis=1)
        counts = (label > 0).reshape(label.shape[0], -1).sum(axis=1).astype(float)
        counts[annotated] = -1
        slice_k = int(np.argmax(counts))

    state = module_state(job, shown)
    state["text"] += suggestion_text(state["round_event"], ras, image.shape)
    volume_name = args.volume_name or spec.get("case_id") or "Volume"
    names = {"inputVolumeSelector": volume_name, "annotationSelector": f"{volume_name} annotation",
             "resultSelector": f"{volume_name} SparseSeg", "uncertaintySelector": None, "applyVolumeSelector": None}

    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    def quiet(mode, context, message):  # the .ui connects qMRMLWidget's mrmlSceneChanged, absent on the stand-in
        if "mrmlSceneChanged" not in message and "QObject::connect:  (" not in message:
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(quiet)
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    panel = build_panel(state, names, spec.get("method", "propagate"), args.panel_width)
    panel.adjustSize()
    bar_height = 26
    view_height = max(panel.sizeHint().height(), 600) - bar_height
    pixels = render_slice_view(image, label, ras, colors, slice_k, (args.view_width, view_height),
                               f"B: {volume_name}")

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPixmap
    from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

    plane_s = (ras @ np.array([0, 0, slice_k, 1.0]))[2]
    view = QWidget()
    column = QVBoxLayout(view)
    column.setContentsMargins(0, 0, 0, 0)
    column.setSpacing(0)
    bar = slice_controller(f"S: {plane_s:.4f}mm", slice_k / max(image.shape[0] - 1, 1), args.view_width)
    bar.setFixedHeight(bar_height)
    column.addWidget(bar)
    qimage = QImage(pixels.data, pixels.shape[1], pixels.shape[0], 3 * pixels.shape[1], QImage.Format_RGB888)
    picture = QLabel()
    picture.setPixmap(QPixmap.fromImage(qimage.copy()))
    picture.setFixedSize(pixels.shape[1], pixels.shape[0])
    column.addWidget(picture)
    column.addStretch(1)

    screen = QWidget()
    row = QHBoxLayout(screen)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(2)
    row.addWidget(panel, 0, Qt.AlignTop)
    row.addWidget(view, 0, Qt.AlignTop)
    screen.adjustSize()
    screen.resize(screen.sizeHint())
    app.processEvents()
    log = panel.findChild(QWidget, "logTextEdit")  # the newest lines in sight, as appendPlainText leaves it
    log.verticalScrollBar().setValue(log.verticalScrollBar().maximum())
    shot = screen.grab()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not shot.save(str(args.out), "PNG"):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({shot.width()}x{shot.height()}, {args.out.stat().st_size // 1024} KB): round {shown} of "
          f"{job}, axial slice k={slice_k}; status: {state['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
