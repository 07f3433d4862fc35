"""Run-folder files read back through one reader: damage and absence are one line naming the file and the fix."""

import json

import numpy as np
import pytest

from skinkeras import runs
from skinkeras.config import ClsTrainConfig, from_json, to_json
from skinkeras.data.classification import read_split

FIX = "restore it from a copy or train the run again"


def one_line(info):
    message = str(info.value)
    assert "\n" not in message
    return message


def test_damaged_json_names_the_file_and_the_fix(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{\n  "dataset": "ham10')
    with pytest.raises(ValueError) as info:
        from_json(ClsTrainConfig, config)
    message = one_line(info)
    assert message.startswith(f"{config} is damaged (Unterminated string starting at: line 2 column 14")
    assert message.endswith(FIX)
    classes = tmp_path / "classes.json"
    classes.write_text('{"dataset": "ham10000", "classes": ["mel",')
    with pytest.raises(ValueError, match=r"classes\.json is damaged \(") as info:
        runs.read_json(classes)
    assert one_line(info).endswith(FIX)
    # valid JSON that is no object of settings is damage too, not a TypeError deep inside
    config.write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json is damaged .*not an object of settings"):
        from_json(ClsTrainConfig, config)


def test_missing_run_file_names_what_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        runs.read_json(tmp_path / "metadata_encoder.json")
    assert one_line(info) == (f"{tmp_path / 'metadata_encoder.json'} is missing (cls-train writes it); "
                              "give the right folder or train the run again")
    with pytest.raises(FileNotFoundError, match=r"calibration\.json is missing \(cls-calibrate writes it\); .* "
                                                "run cls-calibrate again"):
        runs.read_json(tmp_path / runs.CALIBRATION_JSON)
    with pytest.raises(FileNotFoundError, match=r"split\.csv is missing \(seg-train / cls-train writes it\)"):
        read_split(tmp_path / runs.SPLIT_CSV)


@pytest.mark.parametrize("text, reason", [
    ("", "No columns to parse from file"),
    ("image_id,subset\nISIC_1,train\nISIC_2,val,7,extra\n", "Error tokenizing data"),
    ("image_id,label\nISIC_1,0\n", "no column subset"),
    ("image_id,subset,label\nISIC_1,train,zero\n", "label: invalid literal"),
    (b"image_id,subset\n\xff\xfe\x00garbage\n", "codec can't decode"),
])
def test_damaged_split_csv_is_one_line(tmp_path, text, reason):
    path = tmp_path / runs.SPLIT_CSV
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as info:
        read_split(path)
    message = one_line(info)
    assert message.startswith(f"{path} is damaged (") and reason in message and message.endswith(FIX)


def test_damaged_history_csv_is_one_line(tmp_path):
    path = tmp_path / "history.csv"
    assert runs.read_history(path) == []  # a run that has not finished an epoch yet
    for text, reason in (("loss,val_dice\n0.5,0.1\n", "no column epoch"), ("epoch,loss\n1,0.5\n2,nan?\n", "nan?")):
        path.write_text(text)
        with pytest.raises(ValueError) as info:
            runs.read_history(path)
        message = one_line(info)
        assert message.startswith(f"{path} is damaged (") and reason in message and message.endswith(FIX)


def test_valid_run_files_read_back_unchanged(tmp_path):
    cfg = ClsTrainConfig(out=str(tmp_path), epochs=3, head_units=[32])
    to_json(cfg, tmp_path / "config.json")
    assert from_json(ClsTrainConfig, tmp_path / "config.json") == cfg
    runs.write_json(tmp_path / "classes.json", {"dataset": "ham10000", "classes": ["mel", "nv"]})
    assert runs.read_json(tmp_path / "classes.json") == {"dataset": "ham10000", "classes": ["mel", "nv"]}
    # ids stay strings (leading zeros, "NA"), labels ints, empty cells ""
    (tmp_path / runs.SPLIT_CSV).write_text("image_id,lesion_id,label,subset\n0012,NA,3,train\nISIC_2,,0,test\n")
    split = read_split(tmp_path / runs.SPLIT_CSV)
    assert split.image_id.tolist() == ["0012", "ISIC_2"] and split.lesion_id.tolist() == ["NA", ""]
    assert split.label.dtype == np.int64 and split.label.tolist() == [3, 0]
    (tmp_path / "history.csv").write_text("epoch,seconds,loss,val_dice\n1,2.5,0.75,\n2,2.25,0.5,0.125\n")
    assert runs.read_history(tmp_path / "history.csv") == [
        {"epoch": 1.0, "seconds": 2.5, "loss": 0.75}, {"epoch": 2.0, "seconds": 2.25, "loss": 0.5, "val_dice": 0.125}]


def tiny_classifier(path):
    """A two-class `SkinModel` with the classification contract, saved as `path` (a second, no training)."""
    import keras

    from skinkeras.models.contract import CLASSIFICATION, LOGITS, ORIGINAL, PROBABILITIES, Contract, SkinModel

    image = keras.Input((8, 8, 3), name=ORIGINAL)
    logits = keras.layers.Dense(2, name=LOGITS)(keras.layers.GlobalAveragePooling2D()(image))
    probs = keras.layers.Softmax(name=PROBABILITIES)(logits)
    SkinModel({ORIGINAL: image}, probs, contract=Contract(CLASSIFICATION, (ORIGINAL,), PROBABILITIES, LOGITS)).save(path)


def test_cls_run_with_damaged_config_is_one_line(tmp_path):
    from click.testing import CliRunner

    from cli import cli
    from skinkeras.inference import load_cls_run

    model = tmp_path / "best.keras"
    tiny_classifier(model)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": "ham10000", "epochs": 1})[:-5])
    with pytest.raises(ValueError) as info:
        load_cls_run(model)
    message = one_line(info)
    assert message.startswith(f"{config} is damaged (") and message.endswith(FIX)
    # the commands that read a classifier run say the same line, without a traceback
    result = CliRunner().invoke(cli, ["cls-eval", "--model", str(model), "--out", str(tmp_path / "eval")])
    assert result.exit_code != 0 and f"Error: {message}" in result.output and "Traceback" not in result.output
    # a valid config, but the encoder file is gone: named, with what writes it
    to_json(ClsTrainConfig(out=str(tmp_path)), config)
    with pytest.raises(FileNotFoundError, match=r"metadata_encoder\.json is missing \(cls-train writes it\)"):
        load_cls_run(model)
