"""Every picture of the report in one list: its file stem, title, caption and function.

Adding a picture is one entry in ``FIGURES``: the page draws the entries of each section in
this order, writes ``<stem>.png`` and puts the caption under the picture. What the function
receives depends on its section:

- ``CURVES``: a list of ``curves.Curves`` (one per run; ``lejepa compare`` passes several);
- ``PER_K``: the run's ``per_k.PerK`` table;
- ``MODEL``: the loaded run and its validation episodes, ``views.ModelViews``.

A function returns a matplotlib ``Figure``, None when the run has nothing for it to draw, or
raises ``canvas.NotDrawn`` with a reason the page lists among its notes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import attrs

from lejepa_core.report import curves, per_k, views
from lejepa_core.report.canvas import NotDrawn, figure_png

CURVES, PER_K, MODEL = "curves", "per_k", "model"


@attrs.frozen(kw_only=True)
class ReportFigure:
    """One picture of the report (see the module docstring)."""

    stem: str
    title: str
    section: str
    draw: Callable[[Any], Any]
    caption: str


FIGURES = (
    ReportFigure(
        stem="losses",
        title="Losses",
        section=CURVES,
        draw=curves.loss_figure,
        caption=(
            "Each loss part as logged (unweighted; the total is the weighted sum). Solid: training "
            "mean between log points; dashed: validation. A log scale is used when a part spans more "
            "than a factor 50."
        ),
    ),
    ReportFigure(
        stem="validation_loss",
        title="Validation loss",
        section=CURVES,
        draw=curves.validation_loss_figure,
        caption=(
            "Validation total loss after each epoch; the star marks the best epoch, the one saved as "
            "checkpoints/best.pt and used by the latent and rollout pictures below."
        ),
    ),
    ReportFigure(
        stem="prediction",
        title="Prediction quality against the baselines",
        section=CURVES,
        draw=curves.prediction_figure,
        caption=(
            "Validation predictions of all horizons against two baselines on the same samples: "
            "copying the last context latent (nothing changes), and predicting the mean validation "
            "target. The model is useful where its error-to-signal ratio is below both baselines "
            "(cosine above them)."
        ),
    ),
    ReportFigure(
        stem="effective_rank",
        title="Effective rank",
        section=CURVES,
        draw=curves.rank_figure,
        caption=(
            "Effective rank (exp entropy of the normalised singular values) of the validation "
            "latents. A fall towards 1 is collapse; latent_dim is the ceiling."
        ),
    ),
    ReportFigure(
        stem="quantizer",
        title="Quantizer",
        section=CURVES,
        draw=curves.quantizer_figure,
        caption=(
            "Fraction of the codebook used per batch and over the running window, and code "
            "perplexity (the effective number of codes; dotted: the codebook size the quantizer "
            "logged). Falling usage is codebook collapse."
        ),
    ),
    ReportFigure(
        stem="optimisation",
        title="Gradient norm and learning rate",
        section=CURVES,
        draw=curves.optimisation_figure,
        caption=(
            "Global gradient norm before clipping, each point the mean over one log window "
            "(log.every steps), with the clip threshold dotted: clipping acts on single steps, so "
            "a window whose mean is below the line may still hold clipped steps (clip_fraction in "
            "the summary counts them). Right: the learning rate of the warm-up + cosine schedule."
        ),
    ),
    ReportFigure(
        stem="per_k",
        title="Per-horizon figures",
        section=PER_K,
        draw=per_k.per_k_figure,
        caption=(
            "Per horizon k: error-to-signal ratio and cosine from the validation record, and (after "
            "lejepa eval) the probe-decoded state error or cell accuracy against the physics "
            "baselines."
        ),
    ),
    ReportFigure(
        stem="latents",
        title="Latent space",
        section=MODEL,
        draw=views.latent_figure,
        caption=(
            "Target latents of whole validation episodes projected on their first two principal "
            "components, coloured by time; red crosses: the model's predictions from the last "
            "context frame (square) for k = 1..K, circles: the true target latents they should "
            "land on."
        ),
    ),
    ReportFigure(
        stem="rollouts",
        title="Position rollouts",
        section=MODEL,
        draw=views.rollout_figure,
        caption=(
            "2-D positions (the state features the env names as its positions) of validation "
            "episodes: the true path (dots, one colour per object) and the positions a ridge probe "
            "decodes from the predicted latents for k = 1..K (crosses), starting at the last "
            "context frame (square). The probe (the one lejepa eval fits) is fitted on target "
            "latents of training episodes."
        ),
    ),
    ReportFigure(
        stem="grids",
        title="Grids",
        section=MODEL,
        draw=views.grid_figure,
        caption=(
            "For validation episodes: the last context grid, the true next grid and the grid a "
            "ridge probe (one-hot cell values, argmax) decodes from the predicted latent for k = 1, "
            "cropped to the cells that are not padding, in the env's palette."
        ),
    ),
)
"""Every picture, in report order."""


@attrs.frozen
class Picture:
    """A drawn ``ReportFigure``: its PNG bytes."""

    figure: ReportFigure
    png: bytes

    @property
    def stem(self) -> str:
        return self.figure.stem

    @property
    def title(self) -> str:
        return self.figure.title

    @property
    def caption(self) -> str:
        return self.figure.caption

    @property
    def alt(self) -> str:
        return f"{self.title}: {self.caption}"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def draw(section: str, source: Any) -> tuple[list[Picture], list[str]]:
    """(pictures, notes) of every figure of ``section`` drawn from ``source``."""
    pictures, notes = [], []
    for entry in FIGURES:
        if entry.section != section:
            continue
        try:
            figure = entry.draw(source)
        except NotDrawn as exc:
            notes.append(f"{entry.stem}.png not drawn: {exc}")
            continue
        if figure is not None:
            pictures.append(Picture(entry, figure_png(figure)))
    return pictures, notes
