"""Run folders: reuse after a failed start, refusal to overwrite finished work, resume checks."""

import json

import pytest

from skinkeras import runs


def test_failed_start_can_be_rerun_but_trained_run_is_protected(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # written before a start that failed on its data folder
    assert runs.prepare_run_dir(str(run), "seg-train") == str(run)
    (run / "history.csv").write_text("epoch\n1\n")
    with pytest.raises(FileExistsError, match="--resume"):
        runs.prepare_run_dir(str(run), "seg-train")
    assert runs.prepare_run_dir(str(run), "seg-train", resume=True) == str(run)


def test_resume_needs_an_earlier_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        runs.prepare_run_dir(str(tmp_path / "nothing"), "seg-train", resume=True)


def test_skipped_list_appends_and_environment_is_recorded(tmp_path):
    runs.write_skipped(tmp_path, [("a.jpg", "truncated")])
    runs.write_skipped(tmp_path, [("b.jpg", "no mask")])
    assert (tmp_path / "skipped.csv").read_text().splitlines() == ["path,reason", "a.jpg,truncated", "b.jpg,no mask"]
    env = runs.environment(seed=3)
    assert env["seed"] == 3 and env["backend"] in ("jax", "tensorflow", "torch") and env["git_commit"]
    runs.write_json(tmp_path / "e.json", env)
    assert json.loads((tmp_path / "e.json").read_text())["seed"] == 3
