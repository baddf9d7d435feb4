"""Render the napari plugin's screenshot for the README (docs/napari_widget.png), headless.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/napari_screenshot.py docs/napari_widget.png

(Qt 6 on Xvfb's display; Qt 6's offscreen platform runs napari but does not draw its OpenGL canvas.)

Opens the bundled CT with the sammed reader, docks the widget, clicks the liver (object 1) and a
second structure (object 2) with the bundled sammed-demo-3d model, and saves the whole window.
"""

from __future__ import annotations

import os
import sys
import time

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.napari._widget import SegmentWidget

SECOND_VOXEL = (40, 50, 20)  # (i, j, k): a second structure on the liver click's slice


def main(out: str) -> None:
    viewer = napari.Viewer(show=False)
    viewer.window._qt_window.resize(1500, 820)
    [layer] = viewer.open(str(SAMPLE_CT), plugin="sammed")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment (sammed)")
    app = QApplication.instance()

    def settle() -> None:
        deadline = time.time() + 60
        while widget.busy and time.time() < deadline:
            app.processEvents()
            time.sleep(0.01)
        app.processEvents()

    settle()
    widget.points_layer.add(np.asarray(SAMPLE_CT_LIVER_VOXEL, dtype=float)[::-1])
    settle()
    widget.new_object()
    widget.points_layer.add(np.asarray(SECOND_VOXEL, dtype=float)[::-1])
    settle()
    viewer.dims.set_point(0, layer.data_to_world([SAMPLE_CT_LIVER_VOXEL[2], 0, 0])[0])
    viewer.reset_view()
    app.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    picture = Image.fromarray(shot).convert("RGB")
    picture = picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT)  # a small PNG
    picture.save(out, optimize=True)
    print(f"{out}: {picture.size[0]}x{picture.size[1]}, {os.path.getsize(out) / 1024:.0f} KB; {widget.status.text()}")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/napari_widget.png")
