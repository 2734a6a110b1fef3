"""--mode=sample and --mode=evaluate on a 2-step checkpoint, and the checkpoint notebook executed against it."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from tests.train import runs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, moving_shapes_dir):
    workdir = tmp_path_factory.mktemp("modes") / "run"
    out = runs.run(workdir, *runs.TINY, "--config.train.num_steps=2", data_dir=moving_shapes_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    return workdir, moving_shapes_dir


def test_sample_mode_writes_videos(tiny_run):
    workdir, data_dir = tiny_run
    out = runs.run(workdir, *runs.TINY, "--mode=sample", "--num_samples=3", data_dir=data_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    import numpy as np

    videos = np.load(workdir / "samples" / "sample_step2.npz")["videos"]
    assert videos.shape == (3, 4, 16, 16, 3)
    assert np.all(np.abs(videos) <= 1.0 + 1e-6)
    assert (workdir / "samples" / "sample_step2.gif").stat().st_size > 0


def test_evaluate_mode_writes_json(tiny_run):
    workdir, data_dir = tiny_run
    out = runs.run(workdir, *runs.TINY, "--mode=evaluate", "--config.eval.num_samples=3", data_dir=data_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads((workdir / "eval" / "step_2.json").read_text())
    assert result["step"] == 2 and result["num_samples"] == 3 and result["nfe"] == 2
    assert set(result["metrics"]) >= {"object_permanence", "color_constancy", "motion_smoothness", "cleanliness"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert (workdir / "eval" / "step_2.gif").exists()


def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path, moving_shapes_dir):
    out = runs.run(tmp_path / "empty", *runs.TINY, "--mode=evaluate", data_dir=moving_shapes_dir)
    assert out.returncode != 0
    assert "no checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_notebook_executes_against_a_run(tiny_run):
    import nbformat
    from nbclient import NotebookClient

    workdir, _ = tiny_run
    path = pathlib.Path(runs.ROOT, "notebooks", "evaluate_checkpoint.ipynb")
    nb = nbformat.read(path, as_version=4)
    os.environ["VDM_WORKDIR"] = str(workdir)
    os.environ["VDM_NUM_SAMPLES"] = "2"
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        os.environ.pop("VDM_WORKDIR")
        os.environ.pop("VDM_NUM_SAMPLES")
    outputs = "".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "image/gif;base64" in outputs  # the samples are shown inline
    assert "object_permanence" in outputs  # the metrics were computed
