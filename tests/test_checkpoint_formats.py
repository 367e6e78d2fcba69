"""Checkpoint formats: resuming reads only today's; loading weights (eval, report,
``lejepa_core.load``) also reads format 1, whose weights are laid out the same."""

import pytest
import torch

from lejepa_core.errors import CheckpointError
from lejepa_core.training.checkpoint import FORMAT_VERSION, WEIGHTS_FORMATS, load_checkpoint


def _write(path, version):
    torch.save({"format_version": version, "model": {"w": torch.ones(2)}}, path)
    return path


def test_format_1_loads_for_weights_but_not_for_resuming(tmp_path):
    old = _write(tmp_path / "old.pt", 1)
    assert 1 in WEIGHTS_FORMATS and FORMAT_VERSION in WEIGHTS_FORMATS
    state = load_checkpoint(old, formats=WEIGHTS_FORMATS)
    assert torch.equal(state["model"]["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="checkpoint format 1, this lejepa reads format"):
        load_checkpoint(old)


def test_a_newer_format_is_refused_everywhere(tmp_path):
    new = _write(tmp_path / "new.pt", FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="a newer lejepa wrote it"):
        load_checkpoint(new, formats=WEIGHTS_FORMATS)
