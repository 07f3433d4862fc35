"""Config resolution: defaults < experiments/*.toml < CLI; every shipped experiment file is valid."""

from pathlib import Path

import pytest

from skinkeras.config import SegTrainConfig, from_json, resolve, to_json

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("seg_*.toml"))


def test_precedence_and_json_roundtrip(tmp_path):
    file = tmp_path / "exp.toml"
    file.write_text('image_size = 128\nepochs = 3\narch = "unet"\n')
    cfg = resolve(SegTrainConfig, file, epochs=5, encoder=None)
    assert (cfg.image_size, cfg.epochs, cfg.arch, cfg.encoder) == (128, 5, "unet", "efficientnetb3")
    assert SegTrainConfig().aux_weights == [0.2, 0.1] and SegTrainConfig().lr_step_epochs == 4
    to_json(cfg, tmp_path / "c.json")
    assert from_json(SegTrainConfig, tmp_path / "c.json") == cfg


def test_unknown_key_is_named(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text("image_sise = 128\n")
    with pytest.raises(ValueError, match="unknown keys image_sise"):
        resolve(SegTrainConfig, file)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiments_resolve_and_differ_from_defaults(path):
    cfg = resolve(SegTrainConfig, path)
    assert cfg != SegTrainConfig()
