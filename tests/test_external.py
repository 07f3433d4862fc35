"""External validation: the demo's HAM10000 models scored on PH2 and ISIC 2017 folders in their official layouts."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from cli import cli
from skinkeras.data.metadata import MetadataEncoder, sample_availability
from skinkeras.data.sets import external_records, model_labels, segmentation_pairs
from skinkeras.data.synthetic import make_synthetic

HAM = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    out = tmp_path_factory.mktemp("external")
    return make_synthetic(out, n=12, seed=3, image_size=(64, 48), datasets=("ph2", "isic2017"))


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_external_records_map_to_the_model_classes_and_mask_missing_metadata(external):
    ph2, problems, class_map = external_records("ph2", external["ph2"])
    assert not problems and len(ph2) == 12
    assert class_map == {"common_nevus": "nv", "atypical_nevus": "nv", "melanoma": "mel"}
    assert set(ph2.dx) <= {"nv", "mel"} and (ph2.dx == "mel").any()
    # Case-insensitive: a model trained on ISIC 2019 (MEL, NV, ...) gets the same rows; a class it lacks is -1.
    np.testing.assert_array_equal(model_labels(ph2.dx, HAM), [HAM.index(d) for d in ph2.dx])
    np.testing.assert_array_equal(model_labels(["mel", "nv", "bkl", "scc"], ("MEL", "NV", "BKL")), [0, 1, 2, -1])
    encoder = MetadataEncoder(50.0, 15.0)
    # PH2 has no metadata at all: every sample's availability is 0, nothing is filled in.
    features, avail = encoder.transform(ph2)
    assert not features.any() and not sample_availability(avail).any()
    isic, _, isic_map = external_records("isic2017", external["isic2017"], "train")
    assert isic_map == {"melanoma": "mel", "seborrheic_keratosis": "bkl", "nevus": "nv"}
    features, avail = encoder.transform(isic)
    # ISIC 2017 has age and sex but no site: the site group is never available.
    assert not avail[:, 2].any() and avail[:, :2].any()
    assert (np.isnan(isic.age) == (avail[:, 0] == 0)).all()


def test_segment_and_score_a_ham10000_tdbn_on_ph2(tiny_demo, external, tmp_path):
    demo, _ = tiny_demo
    segdir = tmp_path / "segdir"
    output = invoke("segment", "--model", demo / "seg-train" / "best.keras", "--dataset", "ph2",
                    "--data-dir", external["ph2"], "--out", segdir)
    assert "12 written" in output
    out = tmp_path / "eval"
    output = invoke("cls-eval", "--model", demo / "cls-tdbn" / "best.keras", "--dataset", "ph2",
                    "--data-dir", external["ph2"], "--seg-dir", segdir, "--bootstrap", 200, "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 12 and metrics["dataset"] == "ph2"
    assert metrics["scored_classes"] == ["mel", "nv"]
    # Recompute from the written CSVs: probabilities renormalised over mel and nv, balanced accuracy over the two.
    pred = pd.read_csv(out / "predictions.csv")
    truth = pd.read_csv(out / "ground_truth.csv")
    assert list(pred.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    is_mel = truth.MEL.to_numpy() == 1
    pick_mel = pred.MEL.to_numpy() > pred.NV.to_numpy()
    recalls = [np.mean(pick_mel[is_mel]), np.mean(~pick_mel[~is_mel])]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-9)
    assert metrics["melanoma_auc"] == pytest.approx(roc_auc_score(is_mel, pred.MEL), abs=1e-9)
    assert metrics["all_classes"]["accuracy"] <= metrics["accuracy"]
    for name in ("accuracy", "balanced_accuracy", "melanoma_auc"):
        low, high = metrics["intervals"][name]
        assert low <= metrics[name] <= high, name
    assert metrics["bootstrap"]["unit"] == "image" and metrics["bootstrap"]["resamples"] == 200
    assert "melanoma_auc=" in output and "[95% bootstrap intervals" in output
    lesions = pd.read_csv(out / "lesions.csv")
    assert list(lesions.image) == list(pred.image)


def test_seg_eval_on_the_isic2017_test_subset(tiny_demo, external, tmp_path):
    demo, _ = tiny_demo
    out = tmp_path / "seg"
    invoke("seg-eval", "--model", demo / "seg-train" / "best.keras", "--dataset", "isic2017", "--subset", "test",
           "--data-dir", external["isic2017"], "--bootstrap", 300, "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    pairs, _ = segmentation_pairs("isic2017", external["isic2017"], subset="test")
    per_image = pd.read_csv(out / "per_image.csv")
    assert sorted(per_image.image_id) == sorted(p.image_id for p in pairs) and metrics["dataset"] == "isic2017"
    for name in ("dice", "jaccard", "accuracy"):
        low, high = metrics["intervals"][name]
        assert low <= per_image[name].mean() <= high and low < high, name


def test_external_dataset_errors_name_the_fix(tiny_demo, tmp_path):
    demo, _ = tiny_demo
    result = CliRunner().invoke(cli, ["cls-eval", "--model", str(demo / "cls-tdbn" / "best.keras"), "--dataset",
                                      "ph2", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--dataset ph2 needs --data-dir DIR" in result.output
    result = CliRunner().invoke(cli, ["cls-eval", "--model", str(demo / "cls-tdbn" / "best.keras"), "--dataset",
                                      "isic2019", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "trained on ham10000" in result.output
    result = CliRunner().invoke(cli, ["seg-eval", "--model", str(demo / "seg-train" / "best.keras"), "--dataset",
                                      "ph2", "--data-dir", str(tmp_path), "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "PH2" in result.output and len(result.output.strip().splitlines()) == 1
