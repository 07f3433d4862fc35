"""The classical anchor (colour histograms + metadata, logistic regression) on a run's own split."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import cli
from skinkeras.classification.anchor import BINS, colour_features
from skinkeras.classification.train import split_frame
from skinkeras.config import ClsTrainConfig, to_json
from skinkeras.data import classification as cls_data
from skinkeras.data.ham10000 import load_ham10000
from skinkeras.data.synthetic import make_synthetic
from skinkeras.metrics import classification_scores


def test_colour_features_by_hand():
    # A pure blue centre inside a pure red frame: the centre crop (half of each side) sees blue only.
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 255
    img[10:30, 15:45] = (0, 0, 255)
    f = colour_features(img)
    assert f.shape == (3 * BINS + 6,)
    hue, sat, val = f[:BINS], f[BINS:2 * BINS], f[2 * BINS:3 * BINS]
    # PIL's hue of blue is 170 / 255 (240 degrees): bin 10 of 16; saturation and value 1.0 fall in the last bin.
    np.testing.assert_array_equal(np.flatnonzero(hue), [10])
    assert hue[10] == 1.0 and sat[-1] == 1.0 and val[-1] == 1.0
    np.testing.assert_allclose(f[3 * BINS:], [170 / 255, 1, 1, 0, 0, 0], atol=1e-12)
    # Half blue, half black in the centre: two value bins of one half each, a spread of 0.5.
    img[10:30, 30:45] = 0
    f = colour_features(img)
    assert f[2 * BINS] == pytest.approx(0.5) and f[3 * BINS - 1] == pytest.approx(0.5)
    assert f[3 * BINS + 5] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A cls-train run folder as far as the anchor reads it (config.json, split.csv): no model is needed."""
    root = tmp_path_factory.mktemp("anchor")
    data = make_synthetic(root, n=600, seed=0, image_size=(96, 72), datasets=("ham10000",))["ham10000"]
    cfg = ClsTrainConfig(data_dir=str(data), out=str(root / "run"), arch="original_only")
    (root / "run").mkdir()
    to_json(cfg, root / "run" / "config.json")
    df, _ = load_ham10000(str(data))
    cls_data.write_split(split_frame(df, cfg), root / "run" / "split.csv")
    return root / "run"


def test_anchor_fits_the_training_split_and_scores_the_test_split(run_dir, tmp_path):
    out = tmp_path / "anchor"
    result = CliRunner().invoke(cli, ["cls-anchor", "--run", str(run_dir), "--bootstrap", "200", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    split = pd.read_csv(run_dir / "split.csv")
    predictions = pd.read_csv(out / "predictions.csv")
    # Scored on exactly the run's test images, fitted on its training images: the deep model's lesions.
    assert set(predictions.image) == set(split[split.subset == "test"].image_id)
    assert metrics["train_images"] == (split.subset == "train").sum()
    # The synthetic classes differ in colour and metadata: far above chance (1/7) on unseen lesions.
    assert metrics["balanced_accuracy"] > 0.5, metrics
    low, high = metrics["intervals"]["balanced_accuracy"]
    assert low <= metrics["balanced_accuracy"] <= high
    assert metrics["bootstrap"]["groups"] == split[split.subset == "test"].lesion_id.nunique()
    # Its CSVs score to its metrics (what a paired comparison reads back), and its balanced decision is its
    # argmax: balanced class weights already give it a uniform prior.
    truth = pd.read_csv(out / "ground_truth.csv").iloc[:, 1:].to_numpy().argmax(axis=1)
    again = classification_scores(truth, predictions.iloc[:, 1:].to_numpy(), list(predictions.columns[1:]))
    assert again["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"], abs=1e-12)
    assert metrics["prior_corrected"]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
