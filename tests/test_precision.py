"""train.precision: the autocast dtype chosen per device, and TF32 on CUDA (CPU tests with
``torch.cuda`` monkeypatched)."""

from __future__ import annotations

import pytest
import torch

from lejepa_core.errors import UserInputError
from lejepa_core.training import runtime

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("device", "precision", "bf16_supported", "expected"),
    [
        (CPU, "auto", True, None),
        (CPU, "fp32", True, None),
        (CPU, "bf16", False, torch.bfloat16),  # CPU autocast always has bf16
        (CUDA, "auto", True, torch.bfloat16),
        (CUDA, "auto", False, None),  # no fp16 without a GradScaler: fp32 (TF32)
        (CUDA, "bf16", True, torch.bfloat16),
        (CUDA, "fp32", True, None),
    ],
)
def test_autocast_dtype_follows_device_and_bf16_support(
    monkeypatch, device, precision, bf16_supported, expected
):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert runtime.autocast_dtype(device, precision) == expected


def test_explicit_bf16_on_a_cuda_device_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UserInputError, match="does not support bf16"):
        runtime.autocast_dtype(CUDA, "bf16")


def test_cpu_autocast_enters_bf16_and_fp32_enters_nothing():
    with runtime.autocast(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with runtime.autocast(CPU, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_tf32_is_switched_on_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    runtime.enable_tf32(CPU)
    assert calls == []
    runtime.enable_tf32(CUDA)
    assert calls == ["high"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("cuda") == torch.device("cuda")
    assert calls == ["high", "high"]
