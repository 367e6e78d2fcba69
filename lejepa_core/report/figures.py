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

from lejepa_core.report import codebook, curves, frames, gradients, per_k, plan, views
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
            "than a factor 50. A loss that logs a null level (SIGReg) shows it: the value for "
            "isotropic Gaussian latents (dotted) and, when logged, the level for what is fed in "
            "(dash-dot; W correlated frames read about W times higher); the legend marks the one "
            "that applies. Read the loss against that line, not against 1."
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
            "Validation predictions of all horizons against the baselines on the same samples: "
            "copying the last context frame's latent (nothing changes; baseline/copy_last, in the "
            "target's space, with the context encoder's variant when the run logged it too), and "
            "predicting the mean validation target (about 0.8 for Gaussian latents, not 1). The "
            "model is useful where its error-to-signal ratio is below the baselines (cosine above "
            "them)."
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
        draw=codebook.quantizer_figure,
        caption=(
            "Fraction of the codebook used per batch and over the running window; the per-batch "
            "usage relative to what one batch can reach (a batch of N latents uses at most N "
            "codes, so plain usage of a large codebook looks half-dead when it is not; when "
            "logged); and code perplexity (the effective number of codes; dotted: the codebook "
            "size the quantizer logged). Falling usage is codebook collapse."
        ),
    ),
    ReportFigure(
        stem="codebook_refresh",
        title="Codebook refresh",
        section=CURVES,
        draw=codebook.replaced_codes_figure,
        caption=(
            "Codes re-initialised per step (quantizer/replaced_codes, the mean over each log "
            "window), with 10 % of the codebook dotted: a refresh that replaces most of the "
            "codebook at once is a discontinuity the predictor has to relearn."
        ),
    ),
    ReportFigure(
        stem="optimisation",
        title="Gradient norm and learning rate",
        section=CURVES,
        draw=gradients.optimisation_figure,
        caption=(
            "Global gradient norm before clipping: the mean over each log window (log.every "
            "steps) and, when logged, the window's maximum, with the clip threshold dotted. "
            "Clipping acts on single steps, so a window whose mean is below the line may still "
            "hold clipped steps (the maximum shows them; clip_fraction in the summary counts "
            "them). Right: the learning rate of the warm-up + cosine schedule."
        ),
    ),
    ReportFigure(
        stem="gradient_share",
        title="Gradient share per loss",
        section=CURVES,
        draw=gradients.gradient_share_figure,
        caption=(
            "Which losses actually shape the model: each loss's share of the gradient norm on "
            "the shared parameters (grad_share/<loss>), at log steps. A weighted loss whose "
            "share stays near 0 trains nothing, whatever value it logs."
        ),
    ),
    ReportFigure(
        stem="per_k",
        title="Per-horizon figures",
        section=PER_K,
        draw=per_k.per_k_figure,
        caption=(
            "Per horizon k: error-to-signal ratio and cosine from the validation record, and (after "
            "lejepa eval) the probe-decoded state error per feature group, or the cell accuracy, "
            "of the direct prediction and the rollout against the baselines, beside the probe "
            "floor: the probe applied to the true target latents, the part of every decoded "
            "error that is the probe's own."
        ),
    ),
    ReportFigure(
        stem="drift",
        title="Drift: direct prediction against the rollout",
        section=PER_K,
        draw=per_k.drift_figure,
        caption=(
            "Error-to-signal ratio in latent space per horizon k (eval.json): the direct "
            "prediction of z_{t+k}, the autoregressive rollout (the k = 1 prediction applied to "
            "its own output k times, or the smallest trained horizon when k = 1 was not trained) "
            "and copy-last through the target encoder, on the same samples, σ the std of all "
            "their target latents. The gap between rollout and direct prediction is the drift."
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
        stem="frames",
        title="Frames and decoded predictions",
        section=MODEL,
        draw=frames.frames_figure,
        caption=(
            "Image observations of validation episodes: the context frames, then the true frame k "
            "steps after the last one for several k, with the true positions (white circles) and "
            "the positions the ridge probe of lejepa eval decodes from the model's predicted latent "
            "(crosses, one colour per object; with one channel per object, the channel's colour)."
        ),
    ),
    ReportFigure(
        stem="latent_positions",
        title="Latent space by position",
        section=MODEL,
        draw=frames.latent_position_figure,
        caption=(
            "Target latents of the frames of the drawn validation episodes on their first two "
            "principal components, coloured by the position of an object (one panel per "
            "coordinate): smooth colour gradients mean the latents lay positions out smoothly."
        ),
    ),
    ReportFigure(
        stem="grids",
        title="Grids",
        section=MODEL,
        draw=views.grid_figure,
        caption=(
            "For validation episodes: the last context grid, the true next grid, the grid the "
            "grid probe (ridge onto one-hot cells, prior-balanced argmax: docs/metrics.md) decodes "
            "from the predicted latent for k = 1, and the constant-velocity and copy-last grids, "
            "cropped to the cells that are not padding, in the env's palette. Each title gives "
            "that grid's active-cell accuracy (cells that are objects in the true or the last "
            "context grid) and object recall; a blank decoded grid scores 0 recall."
        ),
    ),
    ReportFigure(
        stem="plan",
        title="Planning toward goals",
        section=MODEL,
        draw=plan.plan_views_figure,
        caption=(
            "From plan.json (`lejepa plan`): for the first tasks, the path of the goal elements "
            "(ball 0's position for BouncingBalls) from its start (dot) toward its goal (cross; the "
            "circle is the success distance, filled when reached) under each policy: the planner on "
            "the learned model (latent), the same planner on the true simulator (oracle), random "
            "actions and no-op. Action-conditioned runs only (docs/control.md)."
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
