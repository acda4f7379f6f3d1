"""Make the extension's screenshot (``Resources/Screenshots/1.png``, EXTENSION_SCREENSHOTURLS) from real parts.

Left: the module panel, the real ``SparseSeg.ui`` loaded by Qt offscreen and filled with the state the module
shows while a job streams (``screenshot_panel.py``). Right: Slicer's red (axial) slice view with one streamed round,
rendered by VTK offscreen (``screenshot_slice_view.py``), under a Qt slice-controller strip in Slicer's red. What
both halves show is read from one real worker job (``screenshot_job.py``). This file is the command line and puts
the halves side by side; the modules sit next to it because the script's folder is first on ``sys.path``.

Usage (from the repository root; needs PySide6, vtk, SimpleITK)::

    QT_QPA_PLATFORM=offscreen python Resources/Screenshots/make_screenshot.py --job JOB_FOLDER [--round N]

``JOB_FOLDER`` is a worker job folder (``job.json``, ``inputs/image.nrrd``, ``rounds/NNN/label.nrrd``,
``events.jsonl``). ``make demo`` writes some under ``demo-output/jobs/`` (the default, a hippocampus crop);
the committed 1.png shows the mni152 job of ``make bench-interactive`` (docs/extension-index.md names the command).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this file is run
DEFAULT_JOB = ROOT / "demo-output" / "jobs" / "hippocampus_001" / "stage-2"
DEFAULT_OUT = ROOT / "Resources" / "Screenshots" / "1.png"

#: Slicer's red slice view colour (vtkMRMLSliceNode's "Red" layout colour, 0.952941, 0.290196, 0.2).
SLICER_RED = (243, 74, 51)
#: Height of the slice controller strip above the rendered view, in pixels.
BAR_HEIGHT = 26

from screenshot_job import ShownJob, load_shown_job  # noqa: E402 - after sys.path names their folder
from screenshot_panel import build_panel  # noqa: E402
from screenshot_slice_view import render_slice_view  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def choose_backends() -> None:
    """Qt and VTK offscreen; must run before either loads, which is why their imports are kept inside functions."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not os.environ.get("DISPLAY"):  # no X server: VTK would try X first, warn, then fall back to EGL
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def qt_application():
    """The QApplication in the Fusion style, with the one harmless warning the stand-ins cause kept quiet."""
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    def quiet(mode, context, message):  # the .ui connects qMRMLWidget's mrmlSceneChanged, absent on the stand-in
        if "mrmlSceneChanged" not in message and "QObject::connect:  (" not in message:
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(quiet)
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    return app


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


def slice_view_column(shown: ShownJob, pixels: np.ndarray, width: int):
    """The controller strip above the VTK frame, as one Qt column so the whole screen is grabbed in one go."""
    from PySide6.QtGui import QImage, QPixmap
    from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

    plane_s = (shown.ijk_to_ras @ np.array([0, 0, shown.slice_k, 1.0]))[2]
    view = QWidget()
    column = QVBoxLayout(view)
    column.setContentsMargins(0, 0, 0, 0)
    column.setSpacing(0)
    bar = slice_controller(f"S: {plane_s:.4f}mm", shown.slice_k / max(shown.image.shape[0] - 1, 1), width)
    bar.setFixedHeight(BAR_HEIGHT)
    column.addWidget(bar)
    qimage = QImage(pixels.data, pixels.shape[1], pixels.shape[0], 3 * pixels.shape[1], QImage.Format_RGB888)
    picture = QLabel()
    picture.setPixmap(QPixmap.fromImage(qimage.copy()))
    picture.setFixedSize(pixels.shape[1], pixels.shape[0])
    column.addWidget(picture)
    column.addStretch(1)
    return view


def grab_screen(app, panel, view):
    """Panel and view side by side, top-aligned, grabbed after the log has scrolled to its newest lines."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QHBoxLayout, QWidget

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
    return screen.grab()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    choose_backends()
    shown = load_shown_job(args.job, args.round, args.slice, args.volume_name)

    app = qt_application()
    panel = build_panel(shown.state, shown.node_names, shown.method, args.panel_width)
    panel.adjustSize()
    view_height = max(panel.sizeHint().height(), 600) - BAR_HEIGHT  # the view as tall as the panel
    pixels = render_slice_view(shown.image, shown.label, shown.ijk_to_ras, shown.colors, shown.slice_k,
                               (args.view_width, view_height), f"B: {shown.volume_name}")
    shot = grab_screen(app, panel, slice_view_column(shown, pixels, args.view_width))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not shot.save(str(args.out), "PNG"):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({shot.width()}x{shot.height()}, {args.out.stat().st_size // 1024} KB): round "
          f"{shown.shown_round} of {shown.job}, axial slice k={shown.slice_k}; status: {shown.state['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
