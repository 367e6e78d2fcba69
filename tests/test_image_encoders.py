"""Image encoders (conv, vit), the identity encoder, and block masking of frames."""

from __future__ import annotations

import pytest
import torch

from lejepa_core import ModelSpec
from lejepa_core.training.step import mask_context
from lejepa_plugins.image_encoders import (
    ConvEncoder,
    IdentityEncoder,
    SpatialSoftmax,
    ViTEncoder,
)
from lejepa_plugins.maskers import BlockMasker

CHANNELS = ModelSpec(obs_shape=(3, 12, 10), latent_dim=8, context_frames=2, horizons=(1,))
GRAY = ModelSpec(obs_shape=(12, 10), latent_dim=8, context_frames=2, horizons=(1,))
SMALL = {
    ConvEncoder: {"channels": 8, "blocks": 1, "stages": 1, "keypoints": 4},
    ViTEncoder: {"dim": 16, "depth": 1, "num_heads": 2, "patch_size": 4},
}


@pytest.mark.parametrize("cls", [ConvEncoder, ViTEncoder])
@pytest.mark.parametrize("spec", [CHANNELS, GRAY], ids=["channels", "gray"])
@pytest.mark.parametrize("pooling", ["default", "other"])
def test_image_encoders_map_frames_to_latents_with_gradients(cls, spec, pooling):
    overrides = {}
    if pooling == "other":
        overrides = {"pooling": "flatten"} if cls is ConvEncoder else {"pooling": "mean"}
    encoder = cls(cls.Params(**SMALL[cls], **overrides), spec)
    obs = torch.randn(5, *spec.obs_shape)
    z = encoder(obs)
    assert z.shape == (5, 8)
    z.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    # one frame's latent does not depend on the other frames of the batch
    assert torch.allclose(encoder(obs[:2]), z[:2], atol=1e-5)


@pytest.mark.parametrize("cls", [ConvEncoder, ViTEncoder])
@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(obs_shape=(3, 4, 5, 6), latent_dim=8),
        ModelSpec(obs_shape=(12,), latent_dim=8),
        ModelSpec(obs_shape=(10, 10), latent_dim=8, obs_dtype="int8"),
    ],
    ids=["4d", "vector", "int-grid"],
)
def test_image_encoders_refuse_what_is_no_float_image(cls, spec):
    with pytest.raises(ValueError, match=r"expected float images \[C, H, W\] or \[H, W\]"):
        cls(cls.Params(**SMALL[cls]), spec)


def test_spatial_softmax_reads_the_position_of_a_bright_cell():
    """A single bright cell at (row r, column c) under a sharp softmax -> the grid coordinates
    linspace(-1, 1)[c], linspace(-1, 1)[r] of that cell."""
    pool = SpatialSoftmax(channels=2, height=5, width=7)
    with torch.no_grad():
        pool.log_temperature.fill_(-5.0)  # scale e^5: one cell takes all the weight
    x = torch.zeros(1, 2, 5, 7)
    x[0, 0, 1, 6] = 1.0
    x[0, 1, 4, 0] = 1.0
    out = pool(x)  # [1, 4]: (x0, y0, x1, y1)
    cols, rows = torch.linspace(-1, 1, 7), torch.linspace(-1, 1, 5)
    expected = torch.tensor([[cols[6], rows[1], cols[0], rows[4]]])
    assert torch.allclose(out, expected, atol=1e-3)


def test_identity_encoder_passes_embeddings_through_and_names_the_size():
    spec = ModelSpec(obs_shape=(6,), latent_dim=6)
    encoder = IdentityEncoder(IdentityEncoder.Params(), spec)
    x = torch.randn(3, 6)
    assert torch.equal(encoder(x), x)
    with pytest.raises(ValueError, match=r"obs_shape \(6,\); set model.latent_dim = 6"):
        IdentityEncoder(IdentityEncoder.Params(), ModelSpec(obs_shape=(6,), latent_dim=4))


@pytest.mark.parametrize("shared", [True, False])
def test_block_masking_of_frames_tube_or_per_frame(shared):
    """Frames [B, W, C, H, W]: a block hides the same pixels in every channel; with
    ``shared`` (tube masking) the same blocks in every context frame of a window, else blocks
    drawn per frame."""
    spec = ModelSpec(obs_shape=(3, 16, 16), latent_dim=8)
    masker = BlockMasker(BlockMasker.Params(num_blocks=2, block_scale=(0.1, 0.2)), spec)
    frames = torch.rand(6, 4, 3, 16, 16) + 1.0  # no zero pixels: hidden ones read 0
    generator = torch.Generator().manual_seed(0)
    masked, mask = mask_context(masker, frames, generator, shared=shared)
    masked = masked.reshape(6, 4, 3, 16, 16)
    hidden = masked == 0  # [B, W, C, H, W]
    assert hidden.any()
    assert torch.equal(hidden, hidden[:, :, :1].expand_as(hidden))  # same pixels per channel
    same_in_all_frames = torch.equal(hidden, hidden[:, :1].expand_as(hidden))
    assert same_in_all_frames == shared
    assert torch.equal(hidden[:, :, 0], mask.reshape(6, 4, 16, 16))
