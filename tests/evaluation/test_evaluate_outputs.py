"""What `--mode=evaluate` writes: `<workdir>/eval/step_<N>.{json,gif,mp4}`, and a warning naming them when an
evaluation of the same step replaces earlier ones. The checkpoint, the sampler and the metrics are tiny fakes: the
writing is what is tested."""

import json
import pathlib

import numpy as np
import pytest

from vdm_jax import configuration
from vdm_jax.evaluation import entry
from vdm_jax.train import loop, sampling

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_run(monkeypatch):
    """evaluate_checkpoint with a fake checkpoint (step from `steps`), sampler and metrics (fvd from `fvds`)."""
    steps, fvds = [], []
    monkeypatch.setattr(loop, "restore_for_inference", lambda cfg, workdir, step: (None, None, None, steps.pop(0)))
    monkeypatch.setattr(sampling, "make_sample_fn", lambda graphdef, cfg, num_frames: None)
    videos = np.random.default_rng(0).uniform(-1, 1, (2, 4, 16, 16, 3)).astype(np.float32)
    monkeypatch.setattr(entry, "sample_for_eval", lambda *a, num, **kw: videos[:num])
    monkeypatch.setattr(entry, "evaluate_videos", lambda cfg, videos, **kw: {"fvd": fvds.pop(0)})
    cfg = configuration.from_config_dict(
        configuration.load_config_file(str(ROOT / "configs/default.py"), ["eval.num_samples=2", "train.num_samples=2"])
    )
    return cfg, steps, fvds


def replaced_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "Replacing" in r.getMessage()]


def test_evaluating_a_step_again_replaces_its_files_with_a_warning(tmp_path, fake_run, caplog):
    cfg, steps, fvds = fake_run
    steps += [4, 4, 5]
    fvds += [10.0, 20.0, 30.0]
    out = tmp_path / "eval"
    with caplog.at_level("WARNING"):
        entry.evaluate_checkpoint(cfg, str(tmp_path))
    assert sorted(p.name for p in out.glob("step_4.*")) == ["step_4.gif", "step_4.json", "step_4.mp4"]
    assert replaced_warnings(caplog) == []  # nothing there yet
    with caplog.at_level("WARNING"):
        entry.evaluate_checkpoint(cfg, str(tmp_path))
    (warning,) = replaced_warnings(caplog)
    for name in ("step_4.json", "step_4.gif", "step_4.mp4", str(out)):
        assert name in warning, warning
    # The same names, now holding the second evaluation (other code and the docs read them by name).
    assert json.loads((out / "step_4.json").read_text())["metrics"] == {"fvd": 20.0}
    caplog.clear()
    with caplog.at_level("WARNING"):
        entry.evaluate_checkpoint(cfg, str(tmp_path))  # another step replaces nothing
    assert replaced_warnings(caplog) == []
    assert json.loads((out / "step_5.json").read_text())["metrics"] == {"fvd": 30.0}
