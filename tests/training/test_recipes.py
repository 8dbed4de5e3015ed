"""dgm.training.recipes: a complete, buildable model config for every model kind and data family."""

import pytest

from dgm.data import Scaling
from dgm.models import MODEL_KINDS, build_model
from dgm.training.config import TrainConfig
from dgm.training.recipes import family, recipe

SCALINGS = {
    "vector": Scaling("vector", (2,), 0.0, 1.0, "float64"),
    "small_image": Scaling("image", (1, 8, 8), 8.0, 8.0, "float64", bins=17, layout="NCHW"),
    "image": Scaling("image", (1, 28, 28), 127.5, 127.5, "uint8", bins=256, layout="NHW"),
}


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("fam", list(SCALINGS))
def test_every_recipe_builds(kind, fam):
    scaling = SCALINGS[fam]
    assert family(scaling) == fam
    if (kind, fam) == ("ldm", "vector"):  # a latent model of images only
        with pytest.raises(ValueError, match="ldm models images; this data is vector data"):
            recipe(kind, scaling)
        return
    model_cfg, train_cfg = recipe(kind, scaling)
    model = build_model(model_cfg)
    assert model.kind == kind and list(model.data_shape) == list(scaling.shape)
    TrainConfig.from_dict(train_cfg)


def test_recipes_follow_the_data():
    ddpm, _ = recipe("ddpm", SCALINGS["vector"])
    assert ddpm["bins"] is None and ddpm["dequantize"] is False and ddpm["net"]["dim"] == 2
    vae, _ = recipe("vae", Scaling("vector", (3,), 0.0, 1.0, "float64"))
    assert vae["decoder"] == "gaussian" and vae["data_shape"] == [3]
    hvae, _ = recipe("hvae", SCALINGS["small_image"])
    assert hvae["latent_dims"] == [16, 8] and "latent_dim" not in hvae and hvae["decoder"] == "discretized"


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="'flow'"):
        recipe("flow", SCALINGS["vector"])


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_resolved_for_the_device(monkeypatch, fast):
    # catches: "auto" reaching TrainConfig (it is not a precision), or bf16 chosen where it is not faster
    import dgm.training.recipes as recipes

    monkeypatch.setattr(recipes, "bf16_is_fast", lambda device: fast)
    assert recipes.TABLE["ddpm", "image"]["train"]["mixed_precision"] == "auto"
    _, train = recipe("ddpm", SCALINGS["image"], "cpu")
    assert train["mixed_precision"] == ("bf16" if fast else "no")
    assert recipes.resolve_precision("fp16", "cpu") == "fp16"  # an explicit choice stays
    _, vector = recipe("ddpm", SCALINGS["vector"], "cpu")
    assert vector.get("mixed_precision", "no") == "no"


def test_image_recipe_patches_only_sides_that_divide():
    # The 28x28 recipe's UNet folds 2x2 patches; a 29x31 image falls back to the full-resolution net instead of
    # failing to build (a missing fallback raises "image_size 31 is not a multiple of patch_size 2").
    import torch

    assert recipe("ddpm", SCALINGS["image"])[0]["net"]["patch_size"] == 2
    odd = Scaling("image", (1, 29, 31), 127.5, 127.5, "uint8", bins=256, layout="NHW")
    model_cfg, _ = recipe("ddpm", odd)
    assert model_cfg["net"]["patch_size"] == 1
    model = build_model(model_cfg)
    loss, _ = model.loss(torch.rand(2, 1, 29, 31) * 2 - 1)
    assert torch.isfinite(loss)
