import pytest
import torch

# Test tensors are tiny: one thread avoids oversubscribing the CPU (subprocess tests included).
torch.set_num_threads(1)


@pytest.fixture
def generator():
    g = torch.Generator()
    g.manual_seed(0)
    return g
