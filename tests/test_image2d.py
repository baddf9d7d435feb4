"""2D inputs and outputs (sammed.io.image2d): DICOM display windows, picture modes, volume
slices and their orientation, and mask writing back onto pictures and volume grids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from sammed.errors import InvalidImageError
from sammed.io import Geometry, Image, read_image, write_image
from sammed.io.image2d import read_image_2d, window_unit, write_mask_2d

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom(path, stored: np.ndarray, photometric: str = "MONOCHROME2", **attributes):
    """A minimal single-frame DICOM file with 16-bit stored values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_rescale_then_window_puts_the_window_edges_at_black_and_white(tmp_path) -> None:
    # Stored values s, HU = 2 s - 1024; window 40 / 400 spans HU -160 .. 240.
    hu = np.array([[-1000, -160, 40, 240, 1000, 40]], dtype=np.float64)
    stored = ((hu + 1024) / 2).astype(np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400)
    grey = read_image_2d(path).pixels[0, :, 0]
    assert grey[0] == 0 and grey[1] == 0 and grey[3] == 255 and grey[4] == 255
    assert abs(int(grey[2]) - 128) <= 1


def test_monochrome1_is_inverted_and_multivalued_windows_use_the_first(tmp_path) -> None:
    stored = np.array([[0, 500, 1000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "xray.dcm", stored, "MONOCHROME1", WindowCenter=[500, 100], WindowWidth=[1000, 10])
    grey = read_image_2d(path).pixels[0, :, 0]
    assert grey[0] == 255 and grey[2] == 0 and abs(int(grey[1]) - 128) <= 1


def test_dicom_voi_lut_sequence_and_percentile_fallback(tmp_path) -> None:
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 0, 8])  # LUT Descriptor: 4 entries, first value 0, 8 bits
    lut.add_new(0x00283006, "US", [0, 51, 204, 255])  # LUT Data
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3]], dtype=np.uint16), VOILUTSequence=[lut])
    assert read_image_2d(path).pixels[0, :, 0].tolist() == [0, 51, 204, 255]

    ramp = np.arange(1000, dtype=np.uint16).reshape(20, 50)  # no window: 0.5-99.5 percentiles
    grey = read_image_2d(write_dicom(tmp_path / "ramp.dcm", ramp)).pixels[..., 0].reshape(-1)
    assert grey[:5].max() == 0 and grey[-5:].min() == 255 and abs(int(grey[500]) - 128) <= 2


def test_real_ct_dicom_matches_gdcm_hounsfield_units_in_its_window(data_dir) -> None:
    """pydicom's modality LUT agrees with GDCM's (SimpleITK) HU; the file's 40/400 window is applied."""
    path = data_dir / "dcmqi_ct3slice" / "ct-3slice" / "01.dcm"
    pixels = read_image_2d(path).pixels
    hu = read_image(path).array[:, :, 0].T.astype(np.float64)  # [i, j] -> rows j, columns i
    expected = np.rint(window_unit(hu, 40.0, 400.0) * 255).astype(np.uint8)
    assert pixels.shape == (512, 512, 3) and np.array_equal(pixels[..., 0], expected)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_picture_modes(tmp_path) -> None:
    sixteen = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    PILImage.fromarray(sixteen).save(tmp_path / "sixteen.png")
    grey = read_image_2d(tmp_path / "sixteen.png").pixels
    assert grey.shape == (20, 30, 3) and grey[0, 0, 0] == 0 and grey[-1, -1, 0] == 255

    palette = PILImage.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).convert("P")
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(read_image_2d(tmp_path / "palette.png").pixels, expected)

    rgb = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    PILImage.fromarray(rgb).save(tmp_path / "colour.tif")
    assert np.array_equal(read_image_2d(tmp_path / "colour.tif").pixels, rgb)


@pytest.mark.parametrize("axis, plane_axes", [("i", (1, 2)), ("j", (0, 2)), ("k", (0, 1))])
def test_slice_orientation_and_mask_back_on_the_volume(tmp_path, axis, plane_axes) -> None:
    """Pixel (x, y) of a slice is voxel (x, y) along the two remaining axes, in order, unflipped."""
    shape = (7, 9, 11)
    array = np.zeros(shape, dtype=np.int16)
    spot = [4, 5, 6]
    array[tuple(spot)] = 1000  # the only bright voxel: the window is min-max (percentiles are flat)
    direction = sitk.VersorTransform((0.1, 0.2, 0.3), 0.4).GetMatrix()
    volume = Image(array, Geometry(shape, (0.7, 0.8, 2.0), (10.0, -5.0, 3.0), np.reshape(direction, (3, 3))))
    write_image(volume, tmp_path / "volume.nrrd")
    axis_number = "ijk".index(axis)

    image = read_image_2d(tmp_path / "volume.nrrd", spot[axis_number], axis)
    x, y = spot[plane_axes[0]], spot[plane_axes[1]]
    height, width = shape[plane_axes[1]], shape[plane_axes[0]]
    assert image.size == (height, width)
    assert image.pixels[y, x, 0] == 255 and np.count_nonzero(image.pixels[..., 0] == 255) == 1

    mask = np.zeros(image.size, dtype=bool)
    mask[y, x] = True
    out = write_mask_2d(mask, image, tmp_path / "mask.nii.gz")
    written = read_image(out)
    assert written.geometry.same_grid(read_image(tmp_path / "volume.nrrd").geometry)
    assert np.argwhere(written.array).tolist() == [spot]


def test_png_mask_is_written_atomically_at_the_picture_size(tmp_path) -> None:
    PILImage.fromarray(np.arange(40, dtype=np.uint8).reshape(5, 8)).save(tmp_path / "picture.png")
    image = read_image_2d(tmp_path / "picture.png")
    out = tmp_path / "mask.png"
    out.write_bytes(b"old")
    mask = np.zeros((5, 8), dtype=bool)
    mask[1:3, 2:7] = True
    write_mask_2d(mask, image, out)
    assert np.array_equal(np.asarray(PILImage.open(out)), mask.astype(np.uint8) * 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "picture.png"]
    with pytest.raises(InvalidImageError, match="does not match the image size"):
        write_mask_2d(mask.T, image, out)
    assert np.array_equal(np.asarray(PILImage.open(out)), mask.astype(np.uint8) * 255)
