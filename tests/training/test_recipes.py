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
    model_cfg, train_cfg = recipe(kind, scaling)
    model = build_model(model_cfg)
    assert model.kind == kind and model.config()["data_shape"] == list(scaling.shape)
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
