"""Interactive Session: geometry of the returned masks, embedding reuse, undo/redo, objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sammed.errors import InvalidImageError, PromptError
from sammed.inference import RoiGrid, Session
from sammed.inference.roi import sample_window
from sammed.io import Geometry, Image, read_image, to_sitk
from sammed.models import build_model


class _FakeModel3D(nn.Module):
    """The PromptableModel3D members every stand-in shares: a turbo-sized window, no boxes."""

    window_voxels = 128
    window_spacing_mm = 1.5
    low_res_size = 32
    supports_boxes = False

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def upscale(self, low_res):
        return F.interpolate(low_res, size=(128, 128, 128), mode="trilinear", align_corners=False)


class SphereModel(_FakeModel3D):
    """Stand-in for SAM-Med3D whose logits are a ball of RADIUS_MM around the newest positive click.

    It makes the geometry of the whole window -> original-grid path checkable without weights.
    """

    RADIUS_MM = 12.0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def encode(self, window):
        return torch.zeros(1, 384, 8, 8, 8)

    def decode(self, embedding, coords, labels, mask_input, boxes=None):
        center = coords[0, labels[0] == 1][-1]  # window voxel index (A0, A1, A2)
        grid = (torch.arange(32, dtype=torch.float32) + 0.5) * 4 - 0.5  # low-res cell centres in window voxels
        d0, d1, d2 = torch.meshgrid(grid - center[0], grid - center[1], grid - center[2], indexing="ij")
        distance_mm = torch.sqrt(d0**2 + d1**2 + d2**2) * 1.5
        return (self.RADIUS_MM - distance_mm)[None, None], torch.ones(1, 1)



def _synthetic_image(direction: np.ndarray, spacing=(0.8, 0.9, 2.5), size=(90, 80, 40)) -> Image:
    rng = np.random.default_rng(0)
    array = rng.integers(1, 200, size=size).astype(np.int16)
    return Image(array, Geometry(size, spacing, (-30.0, 12.5, 100.0), direction))


def _rotation(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([-1.0, 1.0, 1.0]), np.diag([1.0, -1.0, -1.0]), _rotation(30)],
    ids=["identity", "flip-x", "flip-yz", "oblique"],
)
def test_mask_lands_at_the_clicked_world_position(direction) -> None:
    image = _synthetic_image(direction)
    session = Session(SphereModel(), image)
    click = (40, 35, 20)
    mask = session.add_point(click)
    assert mask.shape == image.shape and mask.dtype == bool

    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), axis=-1)
    world = image.index_to_world(grid.reshape(-1, 3)).reshape(*image.shape, 3)
    distance = np.linalg.norm(world - image.index_to_world(click), axis=-1)
    radius = SphereModel.RADIUS_MM
    assert mask[distance < radius - 2.0].all()  # 2 mm: low-res cells (6 mm) blur the edge slightly
    assert not mask[distance > radius + 2.0].any()


def test_world_and_voxel_prompts_are_the_same_place() -> None:
    image = _synthetic_image(np.diag([-1.0, 1.0, 1.0]))
    voxel = (31, 44, 17)
    by_voxel = Session(SphereModel(), image).add_point(voxel)
    for convention in ("RAS", "LPS"):
        world = image.index_to_world(voxel, convention)
        by_world = Session(SphereModel(), image).add_point(tuple(world), space="world", convention=convention)
        np.testing.assert_array_equal(by_world, by_voxel)


def test_window_is_resampled_around_the_prompt_only() -> None:
    image = _synthetic_image(np.eye(3), spacing=(1.5, 1.5, 1.5))
    click = np.array([40.0, 35.0, 20.0])
    roi = RoiGrid.centered_at(image.index_to_world(click))
    window = sample_window(to_sitk(image), roi)
    assert window.shape == (128, 128, 128) and window.dtype == image.array.dtype
    # Canonical RAS axes: window axis 0 runs towards R, i.e. opposite to this image's L-going i axis.
    np.testing.assert_array_equal(window[64, 64, 64], image.array[40, 35, 20])
    np.testing.assert_array_equal(window[65, 64, 64], image.array[39, 35, 20])
    np.testing.assert_array_equal(window[64, 63, 64], image.array[40, 36, 20])
    np.testing.assert_array_equal(window[64, 64, 65], image.array[40, 35, 21])
    assert window[0, 0, 0] == 0  # outside the image: zero, as the official padding


def test_prompts_outside_the_image_are_refused() -> None:
    image = _synthetic_image(np.eye(3))
    session = Session(SphereModel(), image)
    with pytest.raises(PromptError, match="outside the image"):
        session.add_point((90, 10, 10))
    with pytest.raises(PromptError, match="outside the image"):
        session.add_point((-500.0, 0.0, 0.0), space="world")
    assert session.object_ids == [] and not session.can_undo


def test_volume_checks() -> None:
    flat = Image(np.zeros((10, 10, 10), np.int16), Geometry((10, 10, 10), (1, 1, 1), (0, 0, 0), np.eye(3)))
    with pytest.raises(InvalidImageError, match="constant"):
        Session(SphereModel(), flat)


def test_undo_redo_reset_and_objects() -> None:
    image = _synthetic_image(np.eye(3))
    session = Session(SphereModel(), image)
    first = session.add_point((20, 20, 10))
    second = session.add_point((30, 25, 12))
    assert not np.array_equal(first, second)
    assert session.undo()
    np.testing.assert_array_equal(session.mask(), first)
    assert session.redo()
    np.testing.assert_array_equal(session.mask(), second)
    assert not session.redo()

    assert session.new_object() == 2
    other = session.add_point((60, 60, 30))
    labels = session.label_map()
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels == 2, other)
    np.testing.assert_array_equal(session.mask(1), second)

    session.reset(2)
    assert session.object_ids == [1]
    assert session.undo()  # reset of an object is undoable
    assert session.object_ids == [1, 2]

    session.add_point((25, 25, 10), object_id=1)
    assert not session.can_redo
    session.reset()
    assert session.object_ids == [] and not session.can_undo
    assert not session.label_map().any()


def test_save_writes_the_input_geometry(tmp_path) -> None:
    image = _synthetic_image(_rotation(30))
    session = Session(SphereModel(), image)
    session.add_point((40, 35, 20))
    path = session.save(tmp_path / "labels.nrrd")
    written = read_image(path)
    assert written.geometry.same_grid(image.geometry, atol=1e-5)
    np.testing.assert_array_equal(written.array.astype(bool), session.mask())


def test_prompts_spanning_more_than_one_window_are_refused() -> None:
    image = _synthetic_image(np.eye(3), spacing=(3.0, 3.0, 3.0), size=(100, 100, 20))
    session = Session(SphereModel(), image)
    session.add_point((5, 5, 5))
    with pytest.raises(PromptError, match="more than one"):
        session.add_point((95, 95, 5))
    # A click outside the window but within reach re-centres the window.
    session.add_point((50, 5, 5))
    assert session.state().roi.contains(image.index_to_world([(5, 5, 5), (50, 5, 5)]))


@pytest.fixture(scope="module")
def tiny_model():
    from support import fixture_weights

    model = build_model("sam-med3d-tiny")
    model.load_state_dict(fixture_weights("tiny"))
    return model


def test_refinement_clicks_reuse_the_image_embedding(tiny_model, data_dir) -> None:
    image = read_image(data_dir / "totalsegmentator_examples" / "example_ct.nii.gz")
    calls = []
    hook = tiny_model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        session = Session(tiny_model, image)
        first = session.add_point((84, 58, 60))
        assert len(calls) == 1
        session.add_point((80, 55, 60), positive=False)
        session.add_point((88, 60, 62))
        assert len(calls) == 1, "a refinement click must not re-run the image encoder"
        assert session.state().low_res.shape == (1, 1, 32, 32, 32)
        session.undo()
        session.undo()
        np.testing.assert_array_equal(session.mask(), first)
        session.new_object()
        session.add_point((85, 58, 60))  # same place, new object: the cached embedding is reused
        assert len(calls) == 1
    finally:
        hook.remove()
    assert session.mask(1).shape == image.shape


def test_box_prompt_without_box_embedding_clicks_its_centre(tiny_model, data_dir) -> None:
    image = read_image(data_dir / "totalsegmentator_examples" / "example_ct_sm.nii.gz")
    by_box = Session(tiny_model, image).add_box((70, 50, 10), (98, 66, 29))
    by_point = Session(tiny_model, image).add_point((84, 58, 19.5))
    np.testing.assert_array_equal(by_box, by_point)


@pytest.mark.parametrize("direction", [np.eye(3), _rotation(30)], ids=["axis-aligned", "oblique"])
def test_tight_paste_back_equals_resampling_the_whole_window(direction) -> None:
    from sammed.inference.roi import covered_region, paste_window_mask, window_logits_to_region

    image = _synthetic_image(direction, spacing=(0.7, 0.8, 1.1), size=(150, 140, 100))
    roi = RoiGrid.centered_at(image.index_to_world((75, 70, 50)))
    grid = np.stack(np.meshgrid(*[np.arange(128.0)] * 3, indexing="ij"), axis=-1)
    rng = np.random.default_rng(1)
    logits = (20.0 - np.linalg.norm(grid - (60, 70, 66), axis=-1)).astype(np.float32)
    logits += rng.normal(scale=0.5, size=logits.shape).astype(np.float32)  # ragged boundary

    full_region = covered_region(roi, image.geometry)
    full = np.zeros(image.shape, bool)
    full[full_region] = window_logits_to_region(logits, roi, image.geometry, full_region) > 0
    region, mask = paste_window_mask(logits, roi, image.geometry)
    tight = np.zeros(image.shape, bool)
    tight[region] = mask
    assert full.sum() > 1000
    np.testing.assert_array_equal(tight, full)


class BrightnessModel(_FakeModel3D):
    """Stand-in whose logits are the window's (normalised) intensity: it segments bright voxels.

    Enough to check that a structure longer than one window is followed across windows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def encode(self, window):
        return F.avg_pool3d(window, 4)

    def decode(self, embedding, coords, labels, mask_input, boxes=None):
        return embedding - 1.0, torch.ones(1, 1)



def _tube_image() -> Image:
    """A bright tube 540 mm long (axis i, 3 mm voxels) in a dim body: longer than two windows."""
    size = (200, 60, 40)
    array = np.full(size, 100, dtype=np.int16)
    array[10:190, 25:35, 15:25] = 1000
    return Image(array, Geometry(size, (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), np.eye(3)))


def test_structures_longer_than_a_window_are_followed() -> None:
    image = _tube_image()
    single = Session(BrightnessModel(), image).add_point((100, 30, 20))
    covered = np.flatnonzero(single.any(axis=(1, 2)))
    assert covered.max() - covered.min() < 70  # one 192 mm window holds 64 voxels of 3 mm

    session = Session(BrightnessModel(), image, max_windows=6)
    grown = session.add_point((100, 30, 20))
    covered = np.flatnonzero(grown.any(axis=(1, 2)))
    assert covered.min() <= 12 and covered.max() >= 187
    assert grown[single].all()
    assert len(session.state().extra_windows) >= 2
    assert not grown[:, :20].any() and not grown[:, 40:].any()  # no leak into the dim body

    session.undo()
    assert not session.mask().any()
