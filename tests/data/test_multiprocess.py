"""Two JAX processes x 4 simulated CPU devices: disjoint shards, and the global batch assembled on 8 devices."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from tests.data.conftest import find_clip, to_uint8

WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, cfg_json, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from jax.experimental import multihost_utils
    from vdm_jax.data import DataConfig, make_iterator
    from vdm_jax.parallel import make_mesh
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = make_mesh((4, 2, 1))
    it = make_iterator(DataConfig(**json.loads(cfg_json)), split="train", global_batch_size=16, mesh=mesh, seed=3)
    result = {}
    for step in range(4):
        batch = next(it)
        video = batch["video"]
        shards = sorted(video.addressable_shards, key=lambda s: s.index[0].start)
        result[f"rows{step}"] = np.array([r for s in shards for r in range(s.index[0].start, s.index[0].stop)])
        result[f"local{step}"] = np.concatenate([np.asarray(s.data) for s in shards])
        result[f"global{step}"] = multihost_utils.process_allgather(video, tiled=True)
        result[f"shard_rows{step}"] = np.array([s.data.shape[0] for s in video.addressable_shards])
    result["state"] = np.array(json.dumps(it.get_state()))
    np.savez(out, **result)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(script: str, args, *, env: dict, timeout: float, cwd=None) -> None:
    """Runs `python -c script <coordinator port> <process id> *args(process id)` as processes 0 and 1 of one JAX
    job; fails with the tail of a process's output unless both exit 0."""
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, port, str(i), *args(i)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out.decode()[-3000:]


def test_two_processes_read_disjoint_shards_into_one_global_batch(tiny_shapes, tiny_shapes_videos, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    cfg_json = json.dumps(dataclasses.asdict(tiny_shapes))
    run_two_processes(WORKER, lambda i: [cfg_json, str(tmp_path / f"p{i}.npz")], env=env, timeout=240)
    r = [dict(np.load(tmp_path / f"p{i}.npz")) for i in range(2)]
    examples = [[], []]
    for step in range(4):
        np.testing.assert_array_equal(r[0][f"global{step}"], r[1][f"global{step}"])
        glob = r[0][f"global{step}"]
        assert glob.shape == (16, 8, 32, 32, 3)
        rows = [set(r[i][f"rows{step}"].tolist()) for i in range(2)]
        assert not rows[0] & rows[1]
        for i in range(2):
            assert np.all(r[i][f"shard_rows{step}"] == 2)  # 16 examples over 8 devices
            local = r[i][f"local{step}"]
            assert local.shape[0] == 8  # global_batch / process_count
            np.testing.assert_array_equal(glob[sorted(rows[i])], local)
            examples[i] += [find_clip(to_uint8(v), tiny_shapes_videos["video"])[0] for v in local]
    # One epoch each: every process saw its own 32 examples once; together they cover the split.
    assert len(set(examples[0])) == 32 and len(set(examples[1])) == 32
    assert not set(examples[0]) & set(examples[1])
    assert json.loads(str(r[0]["state"])) == json.loads(str(r[1]["state"]))
