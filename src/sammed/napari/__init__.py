"""napari plugin ``sammed`` (npe2 manifest ``napari.yaml``): a reader for medical volumes and a
dock widget that turns clicks and boxes drawn in napari layers into ``Session`` prompts.

Install with ``pip install 'sammed[napari]'``; napari then lists *Plugins > Segment (sammed)* and
opens NIfTI / NRRD / MetaImage / DICOM through ``sammed.io``. Importing this package does not
import napari or Qt: the reader (``_reader``) and the layer conventions (``_layers``) work without
them; only the widget (``_widget``) needs napari.
"""

from sammed.napari._layers import METADATA_KEY, LayerError, image_layer_data, volume_from_layer
from sammed.napari._reader import get_reader, read_volumes

__all__ = [
    "METADATA_KEY",
    "LayerError",
    "SegmentWidget",
    "get_reader",
    "image_layer_data",
    "read_volumes",
    "volume_from_layer",
]


def __getattr__(name: str):
    """``SegmentWidget`` is imported on first use (it needs napari and Qt)."""
    if name == "SegmentWidget":
        from sammed.napari._widget import SegmentWidget

        return SegmentWidget
    raise AttributeError(f"module 'sammed.napari' has no attribute {name!r}")
