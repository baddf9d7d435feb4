"""SAM-Med3D configuration as plain data (no torch): what the registry holds and builders read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class SamMed3DConfig:
    """Architecture hyper-parameters; defaults are the turbo checkpoint (official ``vit_b_ori``)."""

    img_size: int = 128
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 384
    mask_in_chans: int = 16
    num_point_embeddings: int = 2
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    # The model window's isotropic voxel size: what the image is resampled to before encoding.
    window_spacing_mm: float = 1.5
    # sammed-demo-3d's one departure from upstream (see PromptEncoder3D.aligned_point_axes).
    aligned_point_axes: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def embedding_grid(self) -> int:
        return self.img_size // self.patch_size

    def with_overrides(self, **overrides) -> "SamMed3DConfig":
        unknown = set(overrides) - set(asdict(self))
        if unknown:
            raise TypeError(f"unknown SAM-Med3D config field(s): {', '.join(sorted(unknown))}")
        if "encoder_global_attn_indexes" in overrides:
            overrides["encoder_global_attn_indexes"] = tuple(overrides["encoder_global_attn_indexes"])
        return replace(self, **overrides)


@dataclass(frozen=True)
class Preprocessing3D:
    """How a 3D model expects its input region (the official inference pipeline)."""

    roi_size: int = 128
    target_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    orientation: str = "RAS"  # canonical orientation of the ROI axes (A0, A1, A2)
    normalization: str = "zscore over voxels > 0"

    @classmethod
    def for_config(cls, config: SamMed3DConfig) -> "Preprocessing3D":
        """The window a configuration encodes: one source of truth for size and spacing."""
        spacing = float(config.window_spacing_mm)
        return cls(roi_size=config.img_size, target_spacing_mm=(spacing, spacing, spacing))

    def describe(self) -> str:
        return (
            f"{self.roi_size}^3 voxels at {self.target_spacing_mm[0]} mm, {self.orientation}, {self.normalization}"
        )
