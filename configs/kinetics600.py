"""Kinetics-600, 64x64: predict 11 frames from 5 (Ho et al. 2022, §4.2 and appendix A).

Kinetics-600 is not in the TFDS catalog: download the videos yourself and read them with the video-folder builder
(class subfolders become labels; see docs/datasets.md):
  python main.py --config=configs/kinetics600.py --workdir=gs://BUCKET/vdm/k600 --distributed \
      --config.data.video_dir=/data/kinetics600/train --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Paper: FVD 16.2 (reconstruction guidance), on 128-256 TPU-v4 chips.
Model: 256 channels, multipliers (1,2,4,8), 2 res blocks, v-prediction, batch 256, 220k steps; a 16-frame model
conditioned at sampling time on 5 frames by reconstruction guidance w_r = 9 with 128 ancestral + 128 Langevin steps.
Our cost estimate (docs/baselines.md): 24.4 TFLOP per clip per step, ~1.4e21 FLOP for 220k steps at batch 256:
~13.5 h on 256 TPU-v4 chips at 40% of peak; 19.5 GiB per device with one clip per device and 8-way FSDP.
"""

from configs import ucf101


def get_config():
    # The UCF-101 network, optimizer and EMA (same widths, attention, dropout, remat), on Kinetics-600 videos.
    config = ucf101.get_config()
    config.data.name = "video_folder"
    config.data.video_dir = "/data/kinetics600/train"
    config.data.num_image_frames = 0
    config.data.shuffle_buffer = 4096

    config.diffusion.parameterization = "v"
    config.diffusion.loss_weighting = "v_mse"

    config.sampler.name = "pc"
    config.sampler.num_steps = 128
    config.sampler.corrector_steps = 1
    config.sampler.gamma = 0.3
    config.sampler.recon_guidance_weight = 9.0

    config.train.num_steps = 220_000
    config.train.batch_size = 256
    config.train.checkpoint_every = 5000
    config.train.sample_every = 20_000
    config.train.eval_every = 50_000

    config.eval.metrics = ("fvd",)
    return config
