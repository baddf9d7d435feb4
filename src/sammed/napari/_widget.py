"""The dock widget: clicks and boxes in napari layers become ``Session`` prompts; masks come back as labels.

Layers the widget makes for the chosen image layer (same scale and translate, so they overlay
voxel for voxel):

* ``<image> clicks`` (points): click in *add* mode; positive by default, **Shift+click** or the
  **T** key / the "negative clicks" box make negative ones (red);
* ``<image> boxes`` (shapes): a rectangle on the current slice becomes a box prompt flat across
  that slice; a polygon or lasso (P / Shift+P) becomes ``Session.add_lasso`` on that slice
  (filled; positive, or negative with the "negative clicks" box);
* ``<image> sammed`` (labels): the result, one value per object (object id), made at the first
  result.

Keys on the clicks and boxes layers: **N** new object, **Ctrl+Z** undo, **Ctrl+Shift+Z** redo,
**Ctrl+Shift+R** reset. The model runs in a ``napari.qt.threading`` worker; operations made
while it runs are queued (``_engine.Engine``) and the widget shows what is running and how many
wait.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from napari.layers import Image as ImageLayer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from sammed.errors import SammedError
from sammed.io import write_mask
from sammed.napari._engine import Engine, Op, Result, Target
from sammed.napari._layers import (
    METADATA_KEY,
    LayerError,
    display_to_voxel,
    inside,
    layer_metadata,
    volume_from_layer,
    voxel_to_display,
)

DEFAULT_MODEL = "sammed-demo-3d"
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SIGN = "sign"
SIGNS = ("positive", "negative")
SIGN_COLOURS = {"positive": "lime", "negative": "red"}
SAVE_FILTERS = "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha)"


def _model_choices() -> list[tuple[str, str]]:
    """(registry name, label) of every 3D model, saying where its weights come from."""
    from sammed.models import get_model_spec, list_models

    choices = []
    for name in list_models(dims=3):
        spec = get_model_spec(name)
        where = "no published weights"
        if spec.bundled_path is not None:
            where = "bundled"
        else:
            try:
                from sammed.models.weights import cached_weights

                cached = cached_weights(spec) is not None
            except Exception:  # noqa: BLE001 - the label is informative only
                cached = False
            if cached:
                where = "cached"
            elif spec.download_url:
                where = "downloaded on first use"
        choices.append((name, f"{name} ({where})"))
    choices.sort(key=lambda c: (c[0] != DEFAULT_MODEL, c[0]))
    return choices


def _segmentation_writer():
    """(write_labels, segmentation_suffix) from sammed.io when it writes .seg.nrrd / DICOM-SEG, else None."""
    try:
        from sammed.io.writers import segmentation_suffix, write_labels
    except ImportError:
        return None
    return write_labels, segmentation_suffix


def save_filters() -> str:
    """The save dialog's formats: what ``SegmentWidget.save`` can write with this sammed."""
    filters = SAVE_FILTERS
    if _segmentation_writer() is not None:
        filters += ";;Slicer segmentation (*.seg.nrrd);;DICOM-SEG (*.dcm)"
    return filters


def _devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


class SegmentWidget(QWidget):
    """Promptable 3D segmentation of an image layer with a sammed model."""

    def __init__(self, napari_viewer, model=None, parent=None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.engine = Engine()
        self._model_override = model  # a model object given by a script; the combo box is then ignored
        self._target: Target | None = None
        self._image_layer = None
        self.points_layer = None
        self.shapes_layer = None
        self.labels_layer = None
        self._labels_for: int | None = None  # target key the labels layer belongs to
        self._last: Result | None = None
        self._consumed_points = 0
        self._syncing = False
        self._shift_negative = False
        self._workers: list = []
        self._evaluated_layer = False  # the image layer last checked (False: none yet)
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._refresh_images()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        for name, label in _model_choices():
            self.model_combo.addItem(label, name)
        self.device_combo = QComboBox()
        self.device_combo.addItems(_devices())
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(PRECISIONS)
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("precision", self.precision_combo)
        layout.addLayout(form)

        self.negative_box = QCheckBox("negative clicks (T; Shift+click inverts)")
        self.negative_box.toggled.connect(self._on_polarity)
        layout.addWidget(self.negative_box)

        grid = QGridLayout()
        self.new_object_button = QPushButton("New object (N)")
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.reset_button = QPushButton("Reset (Ctrl+Shift+R)")
        self.save_button = QPushButton("Save labels...")
        grid.addWidget(self.new_object_button, 0, 0)
        grid.addWidget(self.reset_button, 0, 1)
        grid.addWidget(self.undo_button, 1, 0)
        grid.addWidget(self.redo_button, 1, 1)
        grid.addWidget(self.save_button, 2, 0, 1, 2)
        layout.addLayout(grid)
        self.new_object_button.clicked.connect(self.new_object)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.reset_button.clicked.connect(self.reset)
        self.save_button.clicked.connect(self._save_dialog)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator while the worker runs
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self._on_settings)
        self.model_combo.currentIndexChanged.connect(self._on_settings)
        self.device_combo.currentIndexChanged.connect(self._on_settings)
        self.precision_combo.currentIndexChanged.connect(self._on_settings)

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #ff6b6b;" if error else "")
        if error:
            show_error(f"sammed: {text}")

    # ------------------------------------------------------------------ image layer and session
    def _image_layers(self) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, ImageLayer)]

    def _refresh_images(self, event=None) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        layer = next((lyr for lyr in self._image_layers() if lyr.name == self.image_combo.currentText()), None)
        if layer is not self._evaluated_layer:
            self._on_settings()

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.labels_layer:
            self.labels_layer = None
        if layer is self.points_layer:
            self.points_layer = None
        if layer is self.shapes_layer:
            self.shapes_layer = None
        if layer is self._image_layer:
            self._image_layer = None
            self._target = None
        self._refresh_images()

    @property
    def model_name(self) -> str:
        return self.model_combo.currentData() or DEFAULT_MODEL

    def _on_settings(self, *_) -> None:
        """Image, model, device or precision changed: a new session (the next click starts over)."""
        name = self.image_combo.currentText()
        layer = next((lyr for lyr in self._image_layers() if lyr.name == name), None)
        self._evaluated_layer = layer
        if layer is None:
            self._image_layer = None
            self._target = None
            self._set_status("no image layer: open a 3D scan (File > Open, or drag it in) or add a 3D image layer")
            return
        try:
            volume = volume_from_layer(layer)
        except LayerError as exc:
            self._image_layer = None
            self._target = None
            self._set_status(str(exc), error=True)
            return
        changed_layer = layer is not self._image_layer
        self._image_layer = layer
        self._target = Target(
            image=volume.image,
            model_name=self.model_name if self._model_override is None else "given model",
            device=self.device_combo.currentText() or "cpu",
            precision=self.precision_combo.currentText() or "fp32",
            model=self._model_override,
        )
        if changed_layer or self.points_layer is None or self.shapes_layer is None:
            self._make_prompt_layers(layer)
        self._last = None
        self._sync_prompt_layers()
        where = "its file's geometry" if volume.from_file else "voxel prompts, the layer's scale as spacing"
        self._set_status(f"'{layer.name}' {volume.image.shape} ({where}): loading {self._target.model_name}...")
        self._submit(Op("open", self._target))

    def _make_prompt_layers(self, image_layer) -> None:
        for old in (self.points_layer, self.shapes_layer):
            if old is not None and old in self.viewer.layers:
                self.viewer.layers.remove(old)
        self.labels_layer = None
        scale, translate = tuple(image_layer.scale), tuple(image_layer.translate)
        frame = {"scale": scale, "translate": translate, "units": image_layer.units, "axis_labels": image_layer.axis_labels}
        extent = float(np.max(np.asarray(image_layer.data.shape) * np.abs(np.asarray(scale))))
        self._syncing = True
        try:
            self.points_layer = self.viewer.add_points(
                ndim=3,
                name=f"{image_layer.name} clicks",
                **frame,
                size=max(extent / 60.0, float(np.max(scale))),
                features=pd.DataFrame({SIGN: pd.Categorical([], categories=SIGNS)}),
                feature_defaults={SIGN: "positive"},
                face_color=SIGN,
                face_color_cycle=SIGN_COLOURS,
                border_color="white",
            )
            self.shapes_layer = self.viewer.add_shapes(
                ndim=3,
                name=f"{image_layer.name} boxes",
                **frame,
                edge_color="yellow",
                face_color="transparent",
                edge_width=max(extent / 300.0, float(np.min(scale))),
            )
        finally:
            self._syncing = False
        self._consumed_points = 0
        self.points_layer.events.data.connect(self._on_points_data)
        self.shapes_layer.events.data.connect(self._on_shapes_data)
        self.points_layer.mouse_drag_callbacks.insert(0, self._on_points_press)
        for layer in (self.points_layer, self.shapes_layer):
            layer.bind_key("n", lambda _layer: self.new_object(), overwrite=True)
            layer.bind_key("Control-z", lambda _layer: self.undo(), overwrite=True)
            layer.bind_key("Control-Shift-z", lambda _layer: self.redo(), overwrite=True)
            layer.bind_key("Control-Shift-r", lambda _layer: self.reset(), overwrite=True)
        self.points_layer.bind_key("t", lambda _layer: self.negative_box.toggle(), overwrite=True)
        self.points_layer.mode = "add"
        self.viewer.layers.selection.active = self.points_layer

    # ------------------------------------------------------------------ prompts from the layers
    def _on_polarity(self, negative: bool) -> None:
        if self.points_layer is not None:
            self.points_layer.feature_defaults = {SIGN: "negative" if negative else "positive"}

    def _on_points_press(self, layer, event):
        """Shift+click in add mode inverts the polarity of that one click."""
        if event.type == "mouse_press" and layer.mode == "add" and "Shift" in event.modifiers:
            negative = not self.negative_box.isChecked()
            layer.feature_defaults = {SIGN: "negative" if negative else "positive"}

    def _to_voxel(self, layer, data_position) -> np.ndarray:
        """A position in ``layer``'s data coordinates -> continuous voxel (i, j, k) of the image."""
        world = layer.data_to_world(np.asarray(data_position, dtype=np.float64))
        return display_to_voxel(self._image_layer.world_to_data(world))

    def _snap(self, voxel) -> tuple[float, ...]:
        """The centre of the voxel a prompt falls in (prompts are voxels, as on the command line;
        napari's transforms leave a click a rounding error away from the integer index)."""
        top = np.asarray(self._target.image.shape) - 1
        return tuple(float(v) for v in np.clip(np.rint(voxel), 0, top))

    def _check_ready(self) -> bool:
        if self._image_layer is None or self._image_layer not in self.viewer.layers or self._target is None:
            self._set_status("no image layer to segment: open a 3D scan or choose a 3D image layer", error=True)
            return False
        return True

    def _on_points_data(self, event) -> None:
        if self._syncing or event.action not in ("added", "changed"):
            if not self._syncing and event.action == "removed":
                self._consumed_points = len(self.points_layer.data)
            return
        layer = self.points_layer
        new = range(self._consumed_points, len(layer.data))
        self._consumed_points = len(layer.data)
        self._on_polarity(self.negative_box.isChecked())  # undo a Shift+click's one-off polarity
        if not new:
            return
        if not self._check_ready():
            self._drop_points(new.start)
            return
        signs = layer.features[SIGN].to_numpy()
        for index in new:
            display = np.asarray(layer.data[index], dtype=np.float64)
            voxel = self._to_voxel(layer, display)
            positive = signs[index] != "negative"
            if not inside(voxel, self._target.image.shape):
                self._set_status(
                    f"click at voxel ({', '.join(f'{v:.1f}' for v in voxel)}) is outside the image "
                    f"of size {self._target.image.shape}; nothing changed",
                    error=True,
                )
                continue
            self._submit(Op("point", self._target, (self._snap(voxel), positive), display=(display, positive)))
        self._sync_prompt_layers()

    def _drop_points(self, keep: int) -> None:
        """Remove points drawn after the first ``keep`` (prompts that were refused)."""
        layer = self.points_layer
        self._syncing = True
        try:
            layer.selected_data = set()
            layer.data = np.asarray(layer.data)[:keep]
        finally:
            self._syncing = False
        self._consumed_points = len(layer.data)

    def _on_shapes_data(self, event) -> None:
        if self._syncing or event.action != "added":
            return
        layer = self.shapes_layer
        if not self._check_ready():
            self._syncing = True
            try:
                layer.selected_data = set()
                layer.data = list(layer.data)[:-1]
            finally:
                self._syncing = False
            return
        vertices = np.asarray(layer.data[-1], dtype=np.float64)
        voxels = np.array([self._to_voxel(layer, v) for v in vertices])
        if layer.shape_type[-1] in ("polygon", "path") and self._lasso_from(voxels):
            return
        low, high = voxels.min(axis=0), voxels.max(axis=0)
        if not (inside(low, self._target.image.shape) and inside(high, self._target.image.shape)):
            self._set_status("box reaches outside the image; draw it inside the volume (nothing changed)", error=True)
            self._sync_prompt_layers()
            return
        self._submit(Op("box", self._target, (self._snap(low), self._snap(high))))

    # ------------------------------------------------------------------ public actions
    def add_point(self, voxel, positive: bool = True) -> None:
        """Queue a click at voxel (i, j, k) of the chosen image (what a click in the clicks layer does)."""
        if not self._check_ready():
            return
        voxel = np.asarray(voxel, dtype=np.float64)
        if not inside(voxel, self._target.image.shape):
            self._set_status(f"click at voxel {tuple(voxel)} is outside the image of size {self._target.image.shape}; nothing changed", error=True)
            return
        self._submit(Op("point", self._target, (tuple(voxel), positive), display=(voxel_to_display(voxel), positive)))
        self._sync_prompt_layers()

    def _lasso_from(self, voxels: np.ndarray) -> bool:
        """Queue a drawn polygon as a lasso on the slice it lies in; False when it is not on one slice."""
        spread = np.ptp(voxels, axis=0)
        flat = [axis for axis in range(3) if spread[axis] < 0.5]
        if not flat:
            return False
        axis = flat[-1]  # the sliced display axis is voxel k for the usual axial view
        index = int(round(float(voxels[0, axis])))
        polygon = [tuple(float(v) for v in np.delete(vertex, axis)) for vertex in voxels]
        positive = not self.negative_box.isChecked()
        self._submit(Op("lasso", self._target, (polygon, "ijk"[axis], index, positive)))
        return True

    def add_box(self, low, high) -> None:
        """Queue a box prompt with opposite voxel corners (i, j, k)."""
        if not self._check_ready():
            return
        if not (inside(low, self._target.image.shape) and inside(high, self._target.image.shape)):
            self._set_status("box reaches outside the image; nothing changed", error=True)
            return
        self._submit(Op("box", self._target, (tuple(low), tuple(high))))

    def new_object(self) -> None:
        if self._check_ready():
            self._submit(Op("new_object", self._target))

    def undo(self) -> None:
        if self._check_ready():
            self._submit(Op("undo", self._target))

    def redo(self) -> None:
        if self._check_ready():
            self._submit(Op("redo", self._target))

    def reset(self) -> None:
        if self._check_ready():
            self.engine.clear_queue()
            self._submit(Op("reset", self._target))

    @property
    def busy(self) -> bool:
        """True while a worker runs or its results are still being shown."""
        return bool(self._workers)

    def save(self, path):
        """Write the labels layer on exactly the image's grid (size, spacing, origin, direction).

        NIfTI, NRRD and MetaImage always; a Slicer ``.seg.nrrd`` and a DICOM-SEG ``.dcm`` (for
        a DICOM series input) when this sammed's ``sammed.io`` has their writer.
        """
        if self.labels_layer is None or self._target is None:
            self._set_status("nothing to save yet: click in the image first", error=True)
            return None
        labels = np.asarray(self.labels_layer.data).T
        image = self._target.image
        geometry = self.labels_layer.metadata.get(METADATA_KEY, {}).get("geometry", image.geometry)
        writer = _segmentation_writer()
        try:
            if writer is not None and writer[1](path):
                source = image.source if image.source and Path(image.source).is_dir() else None
                names = {int(v): f"object {int(v)}" for v in np.unique(labels) if v}
                written = writer[0](labels, image, path, names=names, dicom_source=source)
            else:
                written = write_mask(labels, geometry, path)
        except SammedError as exc:
            self._set_status(str(exc), error=True)
            return None
        self._set_status(f"saved {written}")
        show_info(f"sammed: saved {written}")
        return written

    def _save_dialog(self) -> None:
        source = self._target.image.source if self._target is not None else None
        start = ""
        if source:
            stem = Path(source).name
            for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
                if stem.lower().endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            start = str(Path(source).parent / f"{stem}_seg.nii.gz")
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", start, save_filters())
        if path:
            self.save(path)

    # ------------------------------------------------------------------ worker
    def _submit(self, op: Op) -> None:
        if self.engine.submit(op):
            worker = create_worker(self.engine.drain, _progress={"desc": "sammed"})
            worker.yielded.connect(self._on_result)
            worker.finished.connect(lambda w=worker: self._on_worker_finished(w))
            self._workers.append(worker)
            worker.start()
        self.progress.setVisible(True)
        self._show_queue()

    def _show_queue(self) -> None:
        waiting = len(self.engine.queued)
        if waiting:
            self.status.setText(f"working... {waiting} queued")

    def _on_worker_finished(self, worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if not self._workers:
            self.progress.setVisible(False)

    def _on_result(self, result: Result) -> None:
        target = result.op.target
        if self._target is None or target.key != self._target.key:
            return  # a session the user has since replaced
        if result.error:
            self._set_status(f"{result.error} (nothing changed)", error=True)
        else:
            timing = f" in {result.seconds:.1f} s" if result.op.kind in ("point", "box") else ""
            self.status.setText(f"{result.message}{timing}; object {result.active_object}")
            self.status.setStyleSheet("")
        if result.op.kind != "open" or not result.error:
            self._last = result
        if result.labels is not None:
            self._show_labels(result.labels, target)
        if self.labels_layer is not None:
            self.labels_layer.selected_label = result.active_object
        self._sync_prompt_layers()
        self._show_queue()

    def _show_labels(self, labels: np.ndarray, target: Target) -> None:
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers or self._labels_for != target.key:
            if self.labels_layer is not None and self.labels_layer in self.viewer.layers and self._labels_for != target.key:
                self.labels_layer = None  # keep the old result as it is; the new session gets its own layer
            image_layer = self._image_layer
            self.labels_layer = self.viewer.add_labels(
                np.array(labels),
                name=f"{image_layer.name} sammed",
                scale=tuple(image_layer.scale),
                translate=tuple(image_layer.translate),
                units=image_layer.units,
                axis_labels=image_layer.axis_labels,
                metadata=layer_metadata(target.image),
                opacity=0.6,
            )
            self._labels_for = target.key
            if self.points_layer is not None:  # keep prompts on top and active
                self.viewer.layers.selection.active = self.points_layer
        else:
            self.labels_layer.data = np.array(labels)

    # ------------------------------------------------------------------ prompt layers mirror the session
    def _sync_prompt_layers(self) -> None:
        """Show the session's clicks and boxes (plus queued clicks); drop anything else drawn."""
        if self.points_layer is None or self._image_layer is None:
            return
        shown = []
        if self._last is not None:
            for _oid, voxel, positive in self._last.clicks:
                shown.append((self._display_in(self.points_layer, voxel_to_display(voxel)), positive))
        for op in self.engine.pending:
            if op.kind == "point" and op.target is self._target and op.display is not None:
                shown.append((np.asarray(op.display[0]), op.display[1]))
        self._syncing = True
        try:
            coords = np.array([c for c, _ in shown], dtype=np.float64).reshape(-1, 3)
            self.points_layer.selected_data = set()
            self.points_layer.data = coords
            self.points_layer.features = pd.DataFrame(
                {SIGN: pd.Categorical(["positive" if p else "negative" for _, p in shown], categories=SIGNS)}
            )
            self._consumed_points = len(self.points_layer.data)
            if self.shapes_layer is not None and self._last is not None:
                rectangles = [self._rectangle(low, high) for _oid, low, high in self._last.boxes]
                if len(self.shapes_layer.data) or rectangles:
                    self.shapes_layer.selected_data = set()
                    self.shapes_layer.data = []
                    if rectangles:
                        self.shapes_layer.add_rectangles(rectangles, edge_color="yellow", face_color="transparent")
        finally:
            self._syncing = False

    def _display_in(self, layer, display_position) -> np.ndarray:
        """Image-layer data coordinates [k, j, i] -> ``layer``'s data coordinates."""
        world = self._image_layer.data_to_world(np.asarray(display_position, dtype=np.float64))
        return np.asarray(layer.world_to_data(world), dtype=np.float64)

    def _rectangle(self, low, high) -> np.ndarray:
        """A box (voxel corners) as a rectangle on the slice across its flattest display axis."""
        lo, hi = voxel_to_display(low), voxel_to_display(high)
        flat = int(np.argmin(hi - lo))
        a, b = [axis for axis in range(3) if axis != flat]
        corners = []
        for ua, ub in ((lo[a], lo[b]), (lo[a], hi[b]), (hi[a], hi[b]), (hi[a], lo[b])):
            point = np.empty(3)
            point[flat] = (lo[flat] + hi[flat]) / 2
            point[a], point[b] = ua, ub
            corners.append(self._display_in(self.shapes_layer, point))
        return np.array(corners)
