"""FVD's real side across two JAX processes with caches of their own: process 0's statistics reach process 1 bit for
bit, or both compute them and process 0 alone saves them; both report the same FVD. I3D is replaced by per-clip
colour means and spreads (cheap; 6 features, so the statistics' width travels too), the rest of `evaluate_videos`
is the real path."""

import json
import textwrap

from tests.data.test_multiprocess import run_two_processes
from tests.train import runs

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, data_dir, cache_root, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from configs.default import get_config
    from vdm_jax import configuration
    from vdm_jax.evaluation import entry, metrics

    config = get_config()
    config.data.data_dir = data_dir
    config.data.moving_shapes_train_size, config.data.moving_shapes_test_size = 8, 12
    config.eval.metrics, config.eval.num_samples = ("fvd",), 10
    config.eval.cache_dir = os.path.join(cache_root, f"p{pid}")  # each host its own cache
    cfg = configuration.from_config_dict(config)
    calls = []

    def features(v, **_):
        calls.append(len(v))
        v = np.asarray(v, np.float64)
        return np.concatenate([v.mean(axis=(1, 2, 3)), v.std(axis=(1, 2, 3))], axis=1)

    metrics.i3d_features = entry.i3d_features = features
    samples = np.linspace(-1, 1, 4 * 8 * 16 * 16 * 3, dtype=np.float32).reshape(4, 8, 16, 16, 3)
    result = {}
    for name in ("nothing cached", "cached on process 0 only"):
        del calls[:]
        fvd = entry.evaluate_videos(cfg, samples)["fvd"]
        result[name] = {"fvd": float(fvd).hex(), "calls": list(calls), "cache": sorted(os.listdir(cfg.eval.cache_dir))
                        if os.path.isdir(cfg.eval.cache_dir) else []}
    with open(out, "w") as f:
        json.dump(result, f)
    """
)


def test_real_statistics_of_process_0_serve_every_host(tmp_path, moving_shapes_dir):
    from configs.default import get_config
    from vdm_jax import configuration
    from vdm_jax.data import prepare

    config = get_config()
    config.data.data_dir = moving_shapes_dir
    config.data.moving_shapes_train_size, config.data.moving_shapes_test_size = 8, 12
    prepare(configuration.from_config_dict(config).data)  # built once, before the processes read it
    args = lambda i: [moving_shapes_dir, str(tmp_path), str(tmp_path / f"{i}.json")]
    run_two_processes(WORKER, args, env=runs.env(devices=1), timeout=300, cwd=runs.ROOT)
    r = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    first, second = "nothing cached", "cached on process 0 only"
    # Nothing cached: both hosts compute the real side (10 clips), then the samples' features; process 0 saves.
    assert r[0][first]["calls"] == r[1][first]["calls"] == [10, 4]
    assert len(r[0][first]["cache"]) == 1 and r[1][first]["cache"] == []
    # Process 0's cache serves both: process 1 computes no real features and gets the same FVD, bit for bit.
    assert r[0][second]["calls"] == r[1][second]["calls"] == [4]
    fvds = {r[i][k]["fvd"] for i in range(2) for k in (first, second)}
    assert len(fvds) == 1, fvds
    assert r[1][second]["cache"] == []  # process 1 never writes: one cache file per statistics, process 0's
