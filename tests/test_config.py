"""Config resolution: defaults < experiments/*.toml < CLI; every shipped experiment file is valid."""

import dataclasses
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


def test_wrong_types_and_ranges_give_one_line_before_anything_runs(tmp_path):
    cases = {'image_size = "sixty-four"': "image_size must be int", "epochs = 1.5": "epochs must be int",
             'limit = "8"': "limit must be int or none", 'batch_size = "4"': "batch_size must be int",
             "batch_size = 0": "--batch-size must be at least 1", "limit = 0": "--limit must be at least 1",
             "image_size = 7": "--image-size must be at least 32", 'arch = "segformer"': "valid: deep_unet",
             "devices = 0": "--devices must be auto or a positive number", 'devices = "all"': "--devices must be"}
    for line, message in cases.items():
        file = tmp_path / "bad.toml"
        file.write_text(line + "\n")
        with pytest.raises(ValueError, match=message) as info:
            resolve(SegTrainConfig, file)
        assert str(info.value).startswith(str(file)) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        resolve(SegTrainConfig, epochs=0)
    assert resolve(SegTrainConfig, devices=2).devices == "2"  # a TOML number or a CLI string: one spelling


def test_old_classification_config_json_still_reads(tmp_path):
    import json

    from skinkeras.config import ClsTrainConfig

    old = {k: v for k, v in dataclasses.asdict(ClsTrainConfig()).items()
           if k not in ("arch", "ffn_dim", "head_units", "vit_dim")}
    (tmp_path / "baseline.json").write_text(json.dumps({**old, "variant": "tdbn", "arch": "resnet50"}))
    (tmp_path / "variant.json").write_text(json.dumps({**old, "variant": "original_only", "arch": None}))
    assert from_json(ClsTrainConfig, tmp_path / "baseline.json").arch == "resnet50"
    cfg = from_json(ClsTrainConfig, tmp_path / "variant.json")
    assert cfg.arch == "original_only" and cfg.ffn_dim == 2048
