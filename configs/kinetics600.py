"""Kinetics-600, 64x64: predict 11 frames from 5 (Ho et al. 2022, §4.2 and appendix A).

Kinetics-600 is not in the TFDS catalog: download the videos yourself and read them with the video-folder builder
(class subfolders become labels; see docs/datasets.md):
  python main.py --config=configs/kinetics600.py --workdir=gs://BUCKET/vdm/k600 --distributed \
      --config.data.video_dir=/data/kinetics600/train --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Paper: FVD 16.2 (reconstruction guidance), on 256 TPU-v4 chips.
Model: 256 channels, multipliers (1,2,4,8), 2 res blocks, attention at 32/16/8 with head dim 64, conditioning
embedding 1024 (a 2-layer noise-level MLP), dropout 0.1, v-prediction; Adam b2 0.99, lr 2e-4, no weight decay, batch
256, EMA 0.9999, 220k steps, 8 independent image frames per 16-frame video; a 16-frame model conditioned at sampling
time on 5 frames by reconstruction guidance w_r = 9 with 128 ancestral (gamma 0) + 128 Langevin steps (here 127: no
corrector after the last step). Evaluation: 50k predictions, each from the first 5 frames of a test clip. The
video-folder builder has no test split of its own (its `test` is its `train`): evaluate with `--config.data.video_dir`
pointing at the test videos (each folder is prepared as its own dataset). Where the paper takes 50k test videos
without replacement and a random 16-frame window of each, the builder cuts every video into consecutive 16-frame clips
and evaluation takes the first 50k clips in TFDS's stored order (shuffled by key at build time): windows start at
multiples of 16 frames, and one video may give several clips. As in configs/ucf101.py, the warm-up and gradient clipping
are ours.
Our cost estimate (docs/baselines.md): 36.5 TFLOP per clip (16 + 8 image frames) per step, ~2.1e21 FLOP for 220k
steps at batch 256: ~20 h on 256 TPU-v4 chips at 40% of peak; 23.0 GiB per device with one clip per device and
8-way FSDP.
"""

from configs import ucf101


def get_config():
    # The UCF-101 network, optimizer and EMA (same widths, attention, dropout, remat), on Kinetics-600 videos.
    config = ucf101.get_config()
    config.data.name = "video_folder"
    config.data.video_dir = "/data/kinetics600/train"
    config.data.num_image_frames = 8
    config.model.emb_mlp_layers = 2  # The paper's Kinetics model: a 2-layer noise-level MLP (UCF-101: 4).
    config.data.shuffle_buffer = 4096

    config.diffusion.parameterization = "v"
    config.diffusion.loss_weighting = "v_mse"

    config.sampler.name = "pc"
    config.sampler.num_steps = 128
    config.sampler.corrector_steps = 1
    config.sampler.gamma = 0.0
    config.sampler.recon_guidance_weight = 9.0

    config.train.num_steps = 220_000
    config.train.batch_size = 256
    config.train.learning_rate = 2e-4
    config.train.checkpoint_every = 5000
    config.train.sample_every = 20_000
    config.train.eval_every = 0  # At the end only: 50k guided samples, ~11% of training's FLOPs each time.

    config.eval.metrics = ("fvd",)
    config.eval.num_cond_frames = 5  # Predict 11 frames from each test clip's first 5.
    config.eval.num_samples = 50_000  # The paper: 50k test videos.
    return config
