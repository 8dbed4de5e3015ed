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


@pytest.mark.parametrize("amx", [True, False, None])
def test_bf16_is_fast_follows_the_cpu_probe(monkeypatch, amx):
    # catches: bf16 chosen on every CPU (emulated bf16 is slower), or the probe's answer ignored or inverted
    from dgm.runs.device import bf16_is_fast

    if amx is None:
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    else:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert bf16_is_fast("cpu") is bool(amx)
