"""The screenshot's red (axial) slice view, rendered by VTK offscreen (an EGL or OSMesa render window).

The view is built from the same VTK pieces Slicer's 2D view uses, so the picture is a fair likeness rather than a
matplotlib imitation: the job's input volume and one streamed round (``rounds/NNN/label.nrrd``) resliced by
``vtkImageReslice`` on the view's pixel grid (linear for the volume, nearest for the label map), the volume through
``vtkImageMapToWindowLevelColors``, the classes through a ``vtkLookupTable`` as Slicer draws segments in 2D (fill
50 %, outline opaque), three ``vtkImageActor`` layers under a parallel camera and Slicer's corner annotation. If VTK
renders nothing (no offscreen OpenGL) this stops and says so, rather than writing a black picture.

``vtk`` is imported inside the functions: ``make_screenshot.py`` picks the render window class through the
environment before VTK loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Segment display in 2D as Slicer's defaults draw it (vtkMRMLSegmentationDisplayNode: fill 0.5, outline 1.0).
FILL_OPACITY, OUTLINE_OPACITY = 0.5, 1.0


@dataclass(frozen=True)
class ViewGrid:
    """The view's pixel grid on the slice plane: ``slice_to_ijk`` maps plane millimetres to voxel indices."""

    width: int
    height: int
    mm_per_pixel: float
    slice_to_ijk: np.ndarray  #: 4x4, for vtkImageReslice's axes


def view_grid(shape: tuple[int, ...], ijk_to_ras: np.ndarray, slice_k: int, size: tuple[int, int]) -> ViewGrid:
    """Slicer's axial SliceToRAS (x -> -R, y -> A, normal S) through voxel slice ``slice_k``, centred on the
    volume's centre and scaled so the whole volume fits (with a 2 % margin), as Slicer fits a new volume."""
    width, height = size
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[2] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[0] - 1)]) @ ijk_to_ras.T
    low, high = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
    centre = (low + high) / 2
    plane_s = (ijk_to_ras @ np.array([0, 0, slice_k, 1.0]))[2]
    extent_x, extent_y = high[0] - low[0], high[1] - low[1]
    mm_per_pixel = max(extent_x / width, extent_y / height) * 1.02
    slice_to_ras = np.array([[-1.0, 0, 0, centre[0]], [0, 1.0, 0, centre[1]], [0, 0, 1.0, plane_s], [0, 0, 0, 1]])
    return ViewGrid(width, height, mm_per_pixel, np.linalg.inv(ijk_to_ras) @ slice_to_ras)


def vtk_image(array: np.ndarray, vtk_type: int):
    """A ``(k, j, i)`` array as vtkImageData in index space (origin 0, spacing 1): reslicing maps RAS to it."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    flat = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True, array_type=vtk_type)
    data.GetPointData().SetScalars(flat)
    return data


def reslice(data, grid: ViewGrid, linear: bool):
    """``data`` sampled on the view's pixel grid, so each texel lands on one screen pixel (no texture filtering)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, grid.slice_to_ijk[r, c])
    step = grid.mm_per_pixel
    filt = vtk.vtkImageReslice()
    filt.SetInputData(data)
    filt.SetResliceAxes(matrix)
    filt.SetOutputDimensionality(2)
    filt.SetOutputSpacing(step, step, 1.0)
    filt.SetOutputOrigin(-step * (grid.width - 1) / 2, -step * (grid.height - 1) / 2, 0.0)
    filt.SetOutputExtent(0, grid.width - 1, 0, grid.height - 1, 0, 0)
    filt.SetBackgroundLevel(0.0)
    if linear:
        filt.SetInterpolationModeToLinear()
    else:
        filt.SetInterpolationModeToNearestNeighbor()
    filt.Update()
    return filt.GetOutput()


def grey_layer(volume, image: np.ndarray):
    """The background layer; window/level from the volume's intensities (Slicer's automatic window/level, roughly:
    the 0.5-99.5 % range of the voxels above the minimum, so a black surround does not flatten the contrast)."""
    import vtk

    inside = image[image > image.min()]
    lo, hi = np.percentile(inside if inside.size else image, [0.5, 99.5])
    grey = vtk.vtkImageMapToWindowLevelColors()
    grey.SetInputData(volume)
    grey.SetWindow(float(hi - lo) or 1.0)
    grey.SetLevel(float(hi + lo) / 2)
    grey.SetOutputFormatToRGBA()
    grey.Update()
    return grey.GetOutput()


def outline_of(labels, grid: ViewGrid):
    """Label pixels next to another value, on the view's pixel grid (Slicer's 2D outline, one pixel wide)."""
    import vtk
    from vtk.util import numpy_support

    height, width = grid.height, grid.width
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
    return outline_data


def coloured(data, colors: dict[int, tuple[float, float, float]], opacity: float):
    """Label values through a lookup table, transparent where no class is coloured (the background shows)."""
    import vtk

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


def corner_annotation(text: str):
    """Lower-left text as Slicer's "B: <background volume>"."""
    import vtk

    annotation = vtk.vtkCornerAnnotation()
    annotation.SetText(0, text)
    annotation.GetTextProperty().SetColor(1.0, 1.0, 1.0)
    annotation.GetTextProperty().SetFontFamilyToArial()
    annotation.SetMaximumFontSize(14)
    annotation.SetLinearFontScaleFactor(2)
    annotation.SetNonlinearFontScaleFactor(1)
    return annotation


def render_layers(layers: list, origin: tuple[float, ...], grid: ViewGrid, corner_text: str) -> np.ndarray:
    """``layers`` (RGBA images on the view grid, bottom first) under a parallel camera that maps one texel to one
    pixel; the grabbed RGB frame, top row first. Stops if the frame is blank: no usable offscreen OpenGL."""
    import vtk
    from vtk.util import numpy_support

    width, height = grid.width, grid.height
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    window.SetMultiSamples(0)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0, 0, 0)
    window.AddRenderer(renderer)
    for depth, layer in enumerate(layers):
        actor = vtk.vtkImageActor()
        actor.GetMapper().SetInputData(layer)
        actor.InterpolateOff()  # one texel per screen pixel already
        actor.SetPosition(0, 0, depth * 0.1)
        renderer.AddActor(actor)
    renderer.AddViewProp(corner_annotation(corner_text))

    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    cx = origin[0] + grid.mm_per_pixel * (width - 1) / 2
    cy = origin[1] + grid.mm_per_pixel * (height - 1) / 2
    camera.SetFocalPoint(cx, cy, 0)
    camera.SetPosition(cx, cy, 1000)
    camera.SetViewUp(0, 1, 0)
    camera.SetParallelScale(grid.mm_per_pixel * height / 2)
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


def render_slice_view(image: np.ndarray, label: np.ndarray, ijk_to_ras: np.ndarray,
                      colors: dict[int, tuple[float, float, float]], slice_k: int, size: tuple[int, int],
                      corner_text: str) -> np.ndarray:
    """An axial slice through voxel slice ``slice_k`` as Slicer's red view shows it (patient right on the left,
    anterior up, the volume fitted to the view), returned as an RGB ``(height, width, 3)`` uint8 array."""
    import vtk

    grid = view_grid(image.shape, ijk_to_ras, slice_k, size)
    volume = reslice(vtk_image(image.astype(np.float32), vtk.VTK_FLOAT), grid, linear=True)
    labels = reslice(vtk_image(label.astype(np.uint8), vtk.VTK_UNSIGNED_CHAR), grid, linear=False)
    layers = [grey_layer(volume, image), coloured(labels, colors, FILL_OPACITY),
              coloured(outline_of(labels, grid), colors, OUTLINE_OPACITY)]
    return render_layers(layers, volume.GetOrigin(), grid, corner_text)
