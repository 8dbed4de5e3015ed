"""dgm.training.config: TrainConfig validation, the learning-rate curve, and how settings layer."""

import math

import pytest

from dgm.training.config import TrainConfig, learning_rate, merge_settings


@pytest.mark.parametrize("bad", [{"steps": 0}, {"lr": -1.0}, {"batch_size": 2.5}, {"ema_decay": 1.0},
                                 {"minutes": 0}, {"grad_clip": float("nan")}])
def test_train_config_rejects_bad_values(bad):
    key, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=rf"{key} must be .*got {value!r}"):
        TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown key 'stepz'"):
        TrainConfig.from_dict({"stepz": 3})


def test_learning_rate_warms_up_then_decays_to_its_floor():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, lr_decay="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(1e-5) and learning_rate(cfg, 99) == pytest.approx(1e-3)
    assert learning_rate(cfg, 550) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2))))
    assert learning_rate(cfg, 1000) == pytest.approx(0.05e-3)
    flat = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100)
    assert learning_rate(flat, 999) == 1e-3


def test_merge_settings_is_recursive_and_leaves_its_inputs():
    base = {"net": {"hidden": 64, "depth": 2}, "levels": 1000}
    over = {"net": {"hidden": 16}, "schedule": "linear"}
    merged = merge_settings(base, over)
    assert merged == {"net": {"hidden": 16, "depth": 2}, "levels": 1000, "schedule": "linear"}
    assert base == {"net": {"hidden": 64, "depth": 2}, "levels": 1000} and over["net"] == {"hidden": 16}
