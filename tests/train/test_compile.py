"""The UCF-101 paper config compiles at full width (1.17B parameters) on 8 simulated devices with FSDP."""

import json
import subprocess
import sys

from tests.train import runs


def test_ucf101_full_width_compiles_with_fsdp_on_eight_devices():
    out = subprocess.run(
        [sys.executable, "benchmarks/compile_check.py", "--configs=ucf101", "--batch_size=8"],
        cwd=runs.ROOT,
        env=runs.env(devices=8),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    (row,) = json.loads(out.stdout)
    assert row["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    # The paper's UCF-101 U-Net: 256 channels, (1, 2, 4, 8), 2 res blocks, attention at 32/16/8.
    assert 1.0e9 < row["num_params"] < 1.3e9
    # Parameters, Adam moments and EMA (16 bytes per parameter) are split 8 ways; activations dominate the rest.
    state_bytes = 16 * row["num_params"] / 8
    assert row["memory"]["argument_size_in_bytes"] < 1.2 * state_bytes + 64 * 2**20
    # One 24-frame clip per device: forward + backward ~ 3x the forward's ~6.5 TFLOP per 16 frames (+8 image frames).
    assert 15e12 < row["flops_per_device"] < 60e12
