import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def generator():
    g = torch.Generator()
    g.manual_seed(0)
    return g
