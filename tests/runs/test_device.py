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
@pytest.mark.parametrize("avx512_bf16", [True, False, None])
def test_bf16_is_fast_follows_the_cpu_probes(monkeypatch, amx, avx512_bf16):
    # catches: bf16 chosen on every CPU (emulated bf16 is slower), a probe's answer ignored or inverted, or
    # AVX-512 BF16 without AMX (an AMD EPYC: 1.59x faster in bf16) left out
    from dgm.runs.device import bf16_is_fast

    for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512_bf16)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
    assert bf16_is_fast("cpu") is bool(amx or avx512_bf16)


def test_bf16_probe_that_raises_counts_as_no(monkeypatch):
    # catches: a probe's RuntimeError escaping, or stopping the other probe from being asked
    from dgm.runs.device import bf16_is_fast

    def boom():
        raise RuntimeError("cpuinfo failed")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", boom, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert bf16_is_fast("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert bf16_is_fast("cpu") is True
