"""Request and reply bodies of the session API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Vector3 = tuple[float, float, float]
IntVector3 = tuple[int, int, int]
# Request coordinates: JSON parsers accept NaN and Infinity, which no voxel or world position is.
Finite = Annotated[float, Field(allow_inf_nan=False)]
Position3 = tuple[Finite, Finite, Finite]
MAX_OBJECT_ID = 65535  # the label map holds object ids as uint16
MAX_LABEL = 65535  # label files are read as uint8 or uint16
ObjectId = Annotated[int, Field(ge=1, le=MAX_OBJECT_ID)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorReply(Strict):
    detail: str = Field(description="one-line reason")


class Region(Strict):
    """A box of the image grid: voxels offset[a] .. offset[a] + shape[a] - 1 on each axis (i, j, k)."""

    offset: IntVector3
    shape: IntVector3


class Click(Strict):
    object_id: int
    voxel: Vector3 = Field(description="continuous voxel index (i, j, k) of the click")
    positive: bool


class ObjectInfo(Strict):
    object_id: int
    name: str = Field(description="the object's name ('object N' unless named); segment name in .seg.nrrd and DICOM-SEG")
    voxels: int = Field(description="mask size in voxels")
    clicks: list[Click]
    has_box: bool
    iou: float | None = Field(description="the model's own quality estimate of the last prediction")


class SessionInfo(Strict):
    session_id: str
    name: str
    shape: IntVector3
    spacing: Vector3
    origin_lps: Vector3
    direction: list[list[float]] = Field(description="3x3, column a = LPS direction of voxel axis a")
    from_data_root: str | None = Field(description="image path relative to --data-root, or null for uploads")
    active_object: int
    objects: list[ObjectInfo]
    can_undo: bool
    can_redo: bool
    expires_in_s: float


class CreatedSession(SessionInfo):
    session_key: str = Field(description="secret: send it as the X-Session-Key header with every request on this session")


class PointPrompt(Strict):
    position: Position3
    positive: bool = True
    object_id: ObjectId | None = Field(default=None, description="an existing object or the next one; default: the active object")
    space: Literal["voxel", "world"] = "voxel"
    convention: Literal["RAS", "LPS"] = Field(default="RAS", description="for space='world'")


class BoxPrompt(Strict):
    corner_a: Position3
    corner_b: Position3
    object_id: ObjectId | None = Field(default=None, description="an existing object or the next one; default: the active object")
    space: Literal["voxel", "world"] = "voxel"
    convention: Literal["RAS", "LPS"] = "RAS"


MAX_SCRIBBLE_POINTS = 4096  # a drawn stroke, thinned to about one vertex per voxel, is far shorter
MAX_LASSO_VERTICES = 2048  # filling costs vertices x the polygon's box; a slice outline needs far fewer
Position2 = tuple[Finite, Finite]


class ScribblePrompt(Strict):
    voxels: list[Position3] = Field(
        min_length=1, max_length=MAX_SCRIBBLE_POINTS, description="the polyline's continuous voxel positions (i, j, k), in drawing order"
    )
    positive: bool = Field(description="true adds to the object, false marks background")
    object_id: ObjectId | None = Field(default=None, description="an existing object or the next one; default: the active object")


class LassoPrompt(Strict):
    polygon: list[Position2] = Field(
        min_length=3, max_length=MAX_LASSO_VERTICES,
        description="closed polygon on the slice: the two voxel indices other than 'axis', in order (axis k: (i, j))",
    )
    axis: Literal["i", "j", "k"] = Field(description="the voxel axis the slice is perpendicular to")
    index: int = Field(description="the slice's index along 'axis'")
    positive: bool = Field(description="true adds the filled polygon to the object, false cuts it out")
    object_id: ObjectId | None = Field(default=None, description="an existing object or the next one; default: the active object")


class ResetRequest(Strict):
    object_id: ObjectId | None = Field(default=None, description="clear one object (undoable); null clears all")


class ActionReply(Strict):
    """What changed: fetch ``changed`` from /labels to update a view without reloading the whole mask."""

    applied: bool = Field(description="false when there was nothing to undo/redo")
    object_id: int
    active_object: int
    changed: Region | None = Field(description="label-map region that may differ from before; null if none")
    object_voxels: int
    iou: float | None
    seconds: float
    can_undo: bool
    can_redo: bool


class NewObjectRequest(Strict):
    name: str | None = Field(default=None, max_length=64, description="a name for the object (e.g. 'liver')")


class RenameRequest(Strict):
    name: str = Field(min_length=1, max_length=64, description="the object's new name (one line)")


class NewObjectReply(Strict):
    object_id: int
    name: str


class SaveRequest(Strict):
    filename: str | None = Field(
        default=None, min_length=1, max_length=255, description=(
            "file name in the image's folder (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd with names and colours; "
            ".dcm DICOM-SEG for DICOM series); default <image>_seg.nii.gz, <image>_seg.dcm for a DICOM series"
        ),
    )
    object_id: ObjectId | None = Field(default=None, description="save one object as 0/1; default: the label map")
    overwrite: bool = False


class SaveReply(Strict):
    path: str = Field(description="saved file, relative to --data-root")
    voxels: int


class FileEntry(Strict):
    path: str = Field(description="relative to --data-root")
    kind: Literal["image", "folder"]


class FileList(Strict):
    folder: str
    entries: list[FileEntry]


class ServerInfo(Strict):
    name: str
    version: str
    model: str
    model_description: str
    random_weights: bool = Field(description="true when the model runs with untrained weights (results are meaningless)")
    data_root: bool
    max_upload_bytes: int = Field(description="largest request body (compressed bytes as sent)")
    max_image_bytes: int = Field(description="largest decoded image (voxels x bytes per voxel) a session may open")
    memory_budget_bytes: int = Field(description="memory all sessions together may be charged")
    memory_charged_bytes: int = Field(description="charged now by open sessions and images being opened")
    largest_session_bytes: int = Field(description="the charge of one session of the largest accepted image")
    sessions: int
    max_sessions: int
