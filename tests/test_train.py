"""Learning on the synthetic set: validation Dice rises clearly above its first epoch (under JAX, see conftest)."""

import json

import pytest

from skinkeras.config import SegTrainConfig
from skinkeras.segmentation.train import train_segmentation
from skinkeras.runs import read_history

pytestmark = [pytest.mark.backend, pytest.mark.learning]


def test_deep_unet_learns_synthetic_lesions(synthetic, tmp_path):
    cfg = SegTrainConfig(data_dir=str(synthetic["isic2018"]), encoder="mobilenetv2", weights="none", image_size=64,
                         epochs=8, batch_size=8, learning_rate=2e-3, decoder_filters=[64, 32, 16, 16, 8],
                         aspp_filters=32, out=str(tmp_path / "run"))
    run_dir = train_segmentation(cfg, progress=False)
    rows = read_history(f"{run_dir}/history.csv")
    dice = [r["val_mask_dice"] for r in rows]
    assert len(rows) == 8
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert max(dice) > dice[0] + 0.15, dice
    metrics = json.load(open(f"{run_dir}/metrics.json"))
    assert metrics["val"]["dice"] == pytest.approx(max(dice), abs=0.02)
    assert metrics["val"]["dice"] > 0.6
