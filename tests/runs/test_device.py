"""dgm.runs.device: the device is chosen at the edge, by name or "auto"."""

import pytest
import torch

from dgm.runs.device import resolve_device


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
