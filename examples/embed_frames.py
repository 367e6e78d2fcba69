"""Make an embedding dataset: every frame of a trajectory file through a frozen encoder.

    python examples/embed_frames.py data/frames.h5 data/frames_emb.h5 [--dim 64] [--seed 0]

The encoder here is a *randomly initialised, frozen* ``conv`` encoder (the built-in image
encoder, spatial-softmax pooling), a stand-in for the encoder you bring (V-JEPA 2, CLIP, ...):
replace ``make_encoder`` with yours. ``examples/embeddings_physics.toml`` trains a predictor on
the result with the ``identity`` encoder and a frozen target (docs/embeddings.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lejepa_core.data.embed import embed_file
from lejepa_core.interfaces import ModelSpec


def make_encoder(obs_shape: tuple[int, ...], dim: int, seed: int) -> torch.nn.Module:
    """A frozen random ``conv`` encoder: [R, *obs_shape] float frames -> [R, dim]."""
    from lejepa_plugins.image_encoders import ConvEncoder

    torch.manual_seed(seed)
    spec = ModelSpec(obs_shape=obs_shape, latent_dim=dim, context_frames=1, horizons=(1,))
    encoder = ConvEncoder(ConvEncoder.Params(channels=16, blocks=1), spec).eval()
    return encoder.requires_grad_(False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="trajectory file with image observations")
    parser.add_argument("out", help="embedding file to write")
    parser.add_argument("--dim", type=int, default=64, help="embedding size D")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random encoder")
    args = parser.parse_args(argv)
    import h5py

    with h5py.File(args.source, "r") as f:
        obs_shape = tuple(f["observations"].shape[1:])
    encoder = make_encoder(obs_shape, args.dim, args.seed)

    @torch.no_grad()
    def encode(frames: np.ndarray) -> np.ndarray:
        return encoder(torch.from_numpy(frames).float()).numpy()

    out = embed_file(
        args.source,
        args.out,
        encode,
        description=f"frozen random conv encoder (examples/embed_frames.py, seed {args.seed})",
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
