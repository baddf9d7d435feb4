"""2D SAM-family configuration as plain data (no torch): what the registry holds and builders read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
ADAPTER_KEY = ".Adapter."


@dataclass(frozen=True)
class Sam2DConfig:
    """Architecture hyper-parameters; defaults are SAM ViT-B (official ``build_sam_vit_b``).

    ``encoder_adapter`` builds SAM-Med2D's adapters (their weights are in the checkpoint);
    ``bypass_adapters`` keeps them loaded but skips them at run time, which is the paper's
    "SAM-Med2D*" (adapters dropped at test time).
    """

    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    encoder_adapter: bool = False
    adapter_mlp_ratio: float = 0.25
    bypass_adapters: bool = False
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def embedding_grid(self) -> int:
        return self.img_size // self.patch_size

    def with_overrides(self, **overrides) -> "Sam2DConfig":
        unknown = set(overrides) - set(asdict(self))
        if unknown:
            raise TypeError(f"unknown 2D SAM config field(s): {', '.join(sorted(unknown))}")
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in overrides:
                overrides[key] = tuple(overrides[key])
        return replace(self, **overrides)
