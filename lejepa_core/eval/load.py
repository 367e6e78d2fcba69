"""A trained run, rebuilt from its directory, and the fixed samples every evaluation uses.

The model is built from what the run stored (``model_input``: checkpoint, else
``model_input.json``), so it loads without the data file; the data is opened only when asked
for, never generated, and with the normalisation statistics training used. Runs from before
lejepa stored its input are described by their data file (which must then exist).

Shape legend: ``N`` samples, ``D`` latent_dim, ``*obs`` one observation, ``*state`` the
probed state (``/states`` when the file has them, else the raw observation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lejepa_core import artifacts
from lejepa_core.build import build_model, model_spec
from lejepa_core.data.prepare import open_data
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.errors import CheckpointError, DatasetError
from lejepa_core.eval.probe import Probe
from lejepa_core.interfaces import ModelSpec
from lejepa_core.model_input import ModelInput
from lejepa_core.recipe import Recipe, load_recipe
from lejepa_core.training.checkpoint import WEIGHTS_FORMATS, load_checkpoint
from lejepa_core.training.runtime import resolve_device
from lejepa_core.training.step import JEPAModel
from lejepa_core.training.target import make_ema_copy

# The probe's training sample: fixed windows of training episodes (eval.json and the report).
PROBE_BATCHES = 16
PROBE_MAX_BATCH = 512
PROBE_SEED = 1234


@attrs.define(kw_only=True)
class LoadedRun:
    """A run directory's recipe, data, model (eval mode) and target encoder on ``device``.

    data: the run's ``TrajectoryData`` (standardised as in training), None when loaded with
    ``data=False``. model_input: what the run stored about its input.
    """

    path: Path
    recipe: Recipe
    spec: ModelSpec
    data: Any  # TrajectoryData | None
    model_input: ModelInput
    model: JEPAModel
    target_encoder: nn.Module
    device: torch.device
    checkpoint: Path

    def sampler(self, split: str) -> WindowSampler:
        """Windows of the run's ``"train"`` or ``"val"`` episodes (the run's own split)."""
        d = self.recipe.data
        train_eps, val_eps = self.data.episode_split(d.val_fraction, d.split_seed)
        return WindowSampler(
            self.data,
            train_eps if split == "train" else val_eps,
            context_frames=d.context_frames,
            horizons=tuple(d.horizons),
            device=self.device,
        )

    @property
    def batch_size(self) -> int:
        return min(self.recipe.train.batch_size, PROBE_MAX_BATCH)

    @torch.no_grad()
    def fit_probe(
        self, *, alpha: float = 1e-3, batches: int = PROBE_BATCHES, seed: int = PROBE_SEED
    ) -> Probe:
        """The run's probe: target latents -> state (or grid cells), fitted on the fixed
        training windows (``batches`` x ``batch_size``, seed ``seed``; the defaults are the
        probe eval.json and the report share)."""
        z, y = [], []
        for b in self.sampler("train").fixed_batches(self.batch_size, batches, seed):
            z.append(self.target_encoder(b.target_obs).float())
            y.append(b.target_state if b.target_state is not None else b.target_obs)
        return Probe.fit(torch.cat(z), torch.cat(y), cell_values=self.cell_values(), alpha=alpha)

    def cell_values(self) -> int | None:
        """Cell values of grid observations (``spec.env.cell_values``: the env's metadata, else
        the file's largest value + 1); None when the probe decodes a float state."""
        if self.data.state_shape is not None:  # /states, or float observations
            return None
        return self.spec.env.cell_values


def load_run(
    run_dir: str | Path, *, checkpoint: str = "best", device: str | None = None, data: bool = True
) -> LoadedRun:
    """Rebuild the run in ``run_dir`` from ``resolved_recipe.toml`` and
    ``checkpoints/<checkpoint>.pt`` (``best`` falls back to ``last``).

    data: open the run's data file too (``open_run_data``: never generated; a missing file is
    a ``DatasetError`` naming it); with False, ``LoadedRun.data`` is None.
    """
    run_dir = Path(run_dir)
    resolved = run_dir / artifacts.RESOLVED_RECIPE
    if not resolved.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no {artifacts.RESOLVED_RECIPE})")
    recipe = load_recipe(resolved)
    path = run_dir / artifacts.CHECKPOINTS / f"{checkpoint}.pt"
    if not path.is_file() and checkpoint == "best":
        path = run_dir / artifacts.CHECKPOINTS / "last.pt"
    torch_device = resolve_device(device or "auto")
    state = load_checkpoint(path, map_location=torch_device, formats=WEIGHTS_FORMATS)
    stored = state.get("model_input")
    stored = ModelInput.from_dict(stored, where=str(path)) if stored else ModelInput.read(run_dir)
    opened = None
    if data or stored is None:
        opened = open_run_data(run_dir, recipe, stored, torch_device)
    try:
        if stored is None:  # a run from before lejepa stored its input: its data describes it
            stored = ModelInput.from_data(opened, model_spec(recipe, opened))
        spec = stored.model_spec(recipe)
        model = build_model(recipe, spec).to(torch_device)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: does not match the run's recipe ({str(exc).splitlines()[0]})"
            ) from None
        target = model.context_encoder
        if state.get("target_encoder") is not None:
            target = make_ema_copy(model.context_encoder)
            target.load_state_dict(state["target_encoder"])
    except BaseException:
        if opened is not None:
            opened.close()
        raise
    if not data and opened is not None:
        opened.close()
        opened = None
    model.eval()
    target.eval()
    return LoadedRun(
        path=run_dir,
        recipe=recipe,
        spec=spec,
        data=opened,
        model_input=stored,
        model=model,
        target_encoder=target,
        device=torch_device,
        checkpoint=path,
    )


def open_run_data(
    run_dir: Path, recipe: Recipe, stored: ModelInput | None, device: torch.device
) -> Any:
    """The run's data file, standardised as in training: ``data.path`` of the recipe (relative
    to the working directory), else the absolute path the run recorded. Never generated;
    ``DatasetError`` naming the file when it is missing or is not the file the run used."""
    path = Path(recipe.data.path)
    trained_on = Path(stored.data["path"]) if stored and stored.data.get("path") else None
    found = next((p for p in (path, trained_on) if p is not None and p.is_file()), None)
    if found is None:
        elsewhere = (
            f", nor at {trained_on} where the run read it"
            if trained_on and trained_on != path.resolve()
            else ""
        )
        raise DatasetError(
            f"{path}: no such file (data.path of {run_dir}{elsewhere}); the probe and baseline "
            "figures need the run's data and nothing is generated here: restore the file or "
            f"set data.path in {run_dir / artifacts.RESOLVED_RECIPE} (loading the model for "
            "encode/predict needs no data: lejepa_core.load)"
        )
    recipe = attrs.evolve(recipe, data=attrs.evolve(recipe.data, path=str(found)))
    # runs from before lejepa stored its input were standardised with the file's statistics
    stats = stored.normalization if stored is not None else (lambda data: data.stats)
    data = open_data(recipe, device, progress=False, generate=False, stats=stats)
    try:
        if stored is not None:
            stored.check_data(data)
    except BaseException:
        data.close()
        raise
    return data
