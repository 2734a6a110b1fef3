"""Moving MNIST (TFDS `moving_mnist`, 20 frames of 64x64, one channel): unconditional 16-frame generation.

  python main.py --config=configs/moving_mnist.py --workdir=runs/moving_mnist

TFDS only ships a test split of 10k sequences; the adapter trains on its first 90% and evaluates on the last 10% (see
docs/datasets.md). Not a setting of Ho et al. 2022: a mid-size model that trains on one accelerator.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "moving_mnist"
    config.data.num_frames = 16
    config.data.resolution = 64
    config.model.channels = 1
    config.model.base_channels = 64
    config.model.channel_mults = (1, 2, 4, 4)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (16, 8)
    config.model.head_dim = 64
    config.model.emb_dim = 256
    config.model.dropout = 0.1
    config.train.num_steps = 100_000
    config.train.batch_size = 32
    config.train.learning_rate = 2e-4
    config.train.warmup_steps = 1000
    config.train.checkpoint_every = 2000
    config.train.sample_every = 5000
    config.train.eval_every = 10_000
    config.eval.metrics = ("warp_error",)
    config.sampler.num_steps = 128
    return config
