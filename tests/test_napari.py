"""The napari plugin, headless: reader, dock widget, worker queue, bad input, saved geometry.

Qt runs on its offscreen platform. napari's canvas needs an OpenGL context, which Qt's offscreen
platform takes from GLX on an X display: when DISPLAY is unset a private Xvfb is started for
these tests (scripts/install_qt_libs.sh installs it with Mesa's software OpenGL). Models:
the bundled sammed-demo-3d (offline, 3.5 MB), whose mask on the README's liver click is non-empty.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'sammed[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL  # noqa: E402
from sammed.inference import Session  # noqa: E402
from sammed.io import read_image  # noqa: E402
from sammed.models import build_model  # noqa: E402
from sammed.napari import get_reader  # noqa: E402
from sammed.napari._layers import display_transform, volume_from_layer  # noqa: E402

WAIT_MS = 30_000
SECOND_OBJECT_VOXEL = (40, 50, 15)  # (i, j, k) in SAMPLE_CT, away from the liver click


@pytest.fixture(scope="session", autouse=True)
def _headless_qt():
    """QT_QPA_PLATFORM=offscreen, and an X display for its OpenGL (a private Xvfb if none)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if os.environ.get("DISPLAY"):
        yield
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip(
            "no X display for OpenGL: Qt's offscreen platform renders napari's canvas through GLX, "
            "which needs an X server; install xvfb (bash scripts/install_qt_libs.sh)"
        )
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start, so there is no X display for Qt's OpenGL")
    os.environ["DISPLAY"] = f":{number}"
    # Qt keeps its X connection until the process exits (pytest-qt's QApplication lives for the
    # session), and Xlib aborts the process if the server goes first: so Xvfb is not stopped here
    # but ends with this process (PR_SET_PDEATHSIG).
    yield


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM when the parent (pytest) exits (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@pytest.fixture(scope="module")
def ct_path(shared_dir) -> Path:
    """A shared CT volume (the same file the package bundles as SAMPLE_CT)."""
    path = shared_dir / "data" / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared volume not found: {path}")
    return path


def _widget(viewer, qtbot, **kwargs):
    from sammed.napari._widget import SegmentWidget

    widget = SegmentWidget(viewer, **kwargs)
    viewer.window.add_dock_widget(widget, name="sammed")
    _settle(widget, qtbot)
    return widget


def _settle(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)


def _labels(widget) -> np.ndarray:
    return np.asarray(widget.labels_layer.data)


def _click(widget, qtbot, voxel, wait: bool = True) -> None:
    """What a click in add mode does: a point added to the clicks layer (display order [k, j, i])."""
    widget.points_layer.add(np.asarray(voxel, dtype=np.float64)[::-1])  # same scale/translate as the image
    if wait:
        _settle(widget, qtbot)


def _expected_mask(image_path, *clicks) -> np.ndarray:
    session = Session(build_model("sammed-demo-3d", pretrained=True), read_image(image_path))
    for voxel, positive in clicks:
        mask = session.add_point(voxel, positive=positive)
    return mask


# --------------------------------------------------------------------------- reader


def test_reader_keeps_the_geometry(ct_path, shared_dir) -> None:
    reader = get_reader(str(ct_path))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(ct_path))
    image = read_image(ct_path)
    assert kind == "image" and data.shape == image.shape[::-1]
    assert np.array_equal(data, image.array.T)
    kept = kwargs["metadata"]["sammed"]
    assert kept["geometry"].size == image.geometry.size
    assert np.array_equal(kept["geometry"].direction, image.geometry.direction)
    assert kept["geometry"].origin == image.geometry.origin and kept["source"] == str(ct_path)
    assert kept["orientation"] == "RAS"  # this NIfTI is stored RAS: i -> R, j -> A, k -> S
    # napari's world is LPS mm for this axis-aligned scan: world [k, j, i] of a voxel = its LPS (S, P, L)
    scale, translate = np.asarray(kwargs["scale"]), np.asarray(kwargs["translate"])
    voxel = np.array(SAMPLE_CT_LIVER_VOXEL, dtype=np.float64)
    world = translate + scale * voxel[::-1]
    np.testing.assert_allclose(world, image.index_to_world(voxel, "LPS")[::-1], atol=1e-9)
    # a DICOM series folder and a file napari's own readers handle
    dicom = shared_dir / "data" / "totalsegmentator_examples" / "example_ct_dicom"
    [(dicom_data, dicom_kwargs, _)] = get_reader(str(dicom))(str(dicom))
    assert dicom_data.shape == read_image(dicom).shape[::-1]
    assert dicom_kwargs["metadata"]["sammed"]["orientation"] == "LPS"
    assert get_reader(str(shared_dir / "data" / "README.md")) is None


def test_manifest_is_discovered() -> None:
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("sammed")
    assert [r.command for r in manifest.contributions.readers] == ["sammed.get_reader"]
    assert [w.display_name for w in manifest.contributions.widgets] == ["Segment (sammed)"]


# --------------------------------------------------------------------------- the widget end to end


def test_click_undo_new_object_save(make_napari_viewer, qtbot, ct_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(ct_path), plugin="sammed")
    widget = _widget(viewer, qtbot)
    assert widget.points_layer is not None and widget.points_layer.mode == "add"
    assert tuple(widget.points_layer.scale) == tuple(layer.scale)

    _click(widget, qtbot, SAMPLE_CT_LIVER_VOXEL)
    first = _labels(widget).copy()
    assert set(np.unique(first)) == {0, 1}
    expected = _expected_mask(ct_path, (SAMPLE_CT_LIVER_VOXEL, True))
    assert np.array_equal(first.T > 0, expected)  # the same mask as the Session API gives
    assert tuple(widget.labels_layer.scale) == tuple(layer.scale)

    # a negative click (the T key toggles polarity), then undo and redo
    toggle = _key(widget.points_layer, "T")
    toggle(widget.points_layer)
    assert widget.negative_box.isChecked()
    _click(widget, qtbot, (90, 58, 20))
    assert list(widget.points_layer.features["sign"]) == ["positive", "negative"]
    refined = _labels(widget).copy()
    assert not np.array_equal(refined, first)
    qtbot.mouseClick(widget.undo_button, _left())
    _settle(widget, qtbot)
    assert np.array_equal(_labels(widget), first) and len(widget.points_layer.data) == 1
    _key(widget.points_layer, "Control-Shift-Z")(widget.points_layer)
    _settle(widget, qtbot)
    assert np.array_equal(_labels(widget), refined) and len(widget.points_layer.data) == 2

    # a second object: label 2, the first kept
    toggle(widget.points_layer)
    qtbot.mouseClick(widget.new_object_button, _left())
    _click(widget, qtbot, SECOND_OBJECT_VOXEL)
    labels = _labels(widget)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert widget.labels_layer.selected_label == 2

    # saved masks land exactly on the input's grid
    source = read_image(ct_path)
    for name in ("labels.nii.gz", "labels.nrrd"):
        written = widget.save(tmp_path / name)
        assert written is not None, widget.status.text()
        back = read_image(written)
        assert back.geometry.size == source.geometry.size
        assert back.geometry.spacing == source.geometry.spacing
        assert back.geometry.origin == source.geometry.origin
        assert np.array_equal(back.geometry.direction, source.geometry.direction)
        assert np.array_equal(back.array, labels.T)
    from sammed.napari._widget import _segmentation_writer

    if _segmentation_writer() is not None:  # sammed.io writes Slicer .seg.nrrd: offered too
        back = read_image(widget.save(tmp_path / "labels.seg.nrrd"))
        assert back.geometry.size == source.geometry.size and back.geometry.origin == source.geometry.origin
        assert np.array_equal(back.geometry.direction, source.geometry.direction)

    # reset clears everything
    qtbot.mouseClick(widget.reset_button, _left())
    _settle(widget, qtbot)
    assert not _labels(widget).any() and len(widget.points_layer.data) == 0


def test_clicks_during_the_encoder_are_queued(make_napari_viewer, qtbot, ct_path) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(ct_path), plugin="sammed")
    widget = _widget(viewer, qtbot)  # the model is loaded here
    release = threading.Event()
    encoder = widget.engine._session.model.image_encoder
    calls = []

    def slow_forward(*args, **kwargs):
        calls.append(1)
        assert release.wait(timeout=20)
        return type(encoder).forward(encoder, *args, **kwargs)

    encoder.forward = slow_forward  # the worker blocks inside the encoder until released
    try:
        _click(widget, qtbot, SAMPLE_CT_LIVER_VOXEL, wait=False)
        qtbot.waitUntil(lambda: bool(calls), timeout=WAIT_MS)  # the worker is inside the encoder now
        widget.negative_box.setChecked(True)
        _click(widget, qtbot, (90, 58, 20), wait=False)
        widget.negative_box.setChecked(False)
        _click(widget, qtbot, (84, 62, 20), wait=False)
        assert len(widget.engine.queued) == 2 and widget.busy
        assert len(widget.points_layer.data) == 3  # queued clicks stay visible
        assert "2 queued" in widget.status.text()
        assert not widget.progress.isHidden()  # the busy bar is on (the viewer window is not shown)
        release.set()
        _settle(widget, qtbot)
    finally:
        release.set()
        del encoder.forward
    assert widget.progress.isHidden()
    assert [positive for _, _, positive in widget._last.clicks] == [True, False, True]
    expected = _expected_mask(ct_path, (SAMPLE_CT_LIVER_VOXEL, True), ((90, 58, 20), False), ((84, 62, 20), True))
    assert np.array_equal(_labels(widget).T > 0, expected)


def test_plain_array_uses_voxels_and_the_layer_scale(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer = make_napari_viewer()
    volume = read_image(SAMPLE_CT).array.T.copy()  # (k, j, i) numpy array, no file behind it
    layer = viewer.add_image(volume, name="plain", scale=(3.0, 3.0, 3.0), translate=(10.0, 20.0, 30.0))
    widget = _widget(viewer, qtbot)
    _click(widget, qtbot, SAMPLE_CT_LIVER_VOXEL)
    assert _labels(widget).any()
    image = volume_from_layer(layer).image
    assert image.geometry.spacing == (3.0, 3.0, 3.0) and image.geometry.origin == (30.0, 20.0, 10.0)
    back = read_image(widget.save(tmp_path / "plain.nii.gz"))
    assert back.geometry.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(back.geometry.origin, (30.0, 20.0, 10.0))
    assert np.array_equal(back.array, _labels(widget).T)
    # a rectangle drawn on a slice of the boxes layer is a box prompt (flat across that slice)
    before = _labels(widget).copy()
    widget.new_object()
    k = 20
    widget.shapes_layer.add_rectangles(np.array([[k, 45, 70], [k, 45, 95], [k, 70, 95], [k, 70, 70]], dtype=float))
    _settle(widget, qtbot)
    assert "box on object 2" in widget.status.text()
    assert (_labels(widget) == 2).any() and np.array_equal(_labels(widget) == 1, (before == 1) & (_labels(widget) != 2))
    [(oid, low, high)] = widget._last.boxes
    assert oid == 2 and tuple(low) == (70, 45, k) and tuple(high) == (95, 70, k)
    # the scripting call a click makes
    from sammed.napari import SegmentWidget

    assert isinstance(widget, SegmentWidget)
    widget.add_point((60, 50, 20), positive=False)
    _settle(widget, qtbot)
    assert "negative click on object 2" in widget.status.text()
    # a polygon drawn on a slice is a lasso there: filled, added to the active object, undoable
    widget.new_object()
    widget.shapes_layer.add_polygons(np.array([[k, 40, 40], [k, 40, 60], [k, 60, 60], [k, 60, 40]], dtype=float))
    _settle(widget, qtbot)
    assert "positive lasso on object 3" in widget.status.text(), widget.status.text()
    assert (_labels(widget)[k, 41:59, 41:59] == 3).all()  # (k, j, i) display order: the square's inside
    widget.undo()
    _settle(widget, qtbot)
    assert not (_labels(widget) == 3).any()
    # the reader's transform of that file puts it where the plain layer was
    scale, translate = display_transform(back.geometry)
    np.testing.assert_allclose(scale, layer.scale)
    np.testing.assert_allclose(translate, layer.translate)


# --------------------------------------------------------------------------- bad input


def test_bad_input_shows_a_message_and_changes_nothing(make_napari_viewer, qtbot, ct_path) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer, qtbot)
    assert "no image layer" in widget.status.text()
    widget.undo()  # no image layer at all
    assert "no image layer" in widget.status.text() and len(viewer.layers) == 0

    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="flat")
    assert "2D layer" in widget.status.text()
    assert [lyr.name for lyr in viewer.layers] == ["flat"] and widget.points_layer is None
    viewer.add_image(np.zeros((16, 16, 16, 3), dtype=np.uint8), name="colour", rgb=True)
    widget.image_combo.setCurrentText("colour")
    assert "RGB" in widget.status.text() and widget.points_layer is None

    [ct] = viewer.open(str(ct_path), plugin="sammed")
    widget.image_combo.setCurrentText(ct.name)
    _settle(widget, qtbot)
    _click(widget, qtbot, SAMPLE_CT_LIVER_VOXEL)
    before = _labels(widget).copy()
    # a click outside the volume: refused before the model, the point removed
    _click(widget, qtbot, (400, 50, 15))
    assert "outside the image" in widget.status.text()
    assert np.array_equal(_labels(widget), before) and len(widget.points_layer.data) == 1
    # a box reaching outside
    widget.add_box((100, 50, 15), (130, 60, 15))
    assert "outside the image" in widget.status.text()
    # no image layer behind the clicks layer any more
    viewer.layers.remove(ct)
    _click(widget, qtbot, SAMPLE_CT_LIVER_VOXEL)
    assert "no image layer" in widget.status.text()
    assert np.array_equal(_labels(widget), before) and len(widget.points_layer.data) == 1  # the new click dropped


def _key(layer, key: str):
    """The function bound to ``key`` on ``layer`` (what pressing it calls)."""
    from app_model.types import KeyBinding

    return layer.keymap[KeyBinding.from_str(key)]


def _left():
    from qtpy.QtCore import Qt

    return Qt.LeftButton
