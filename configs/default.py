"""The embedded CPU demo: a small, faithful VDM trained on the package's own synthetic `moving_shapes` videos.

Launch (a laptop CPU; the dataset is generated on first use):
  python main.py --config=configs/default.py --workdir=runs/default

Every other config in this folder starts from `get_config()` here and overrides what differs. Every key is
documented once, here. Override any key on the command line: `--config.train.num_steps=100`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # Seeds parameters, data order, noise levels and sampling.

    # ---------------------------------------------------------------- data
    config.data = data = ml_collections.ConfigDict()
    data.name = "moving_shapes"  # moving_shapes | video_folder | ucf101 | bair_robot_pushing_small | moving_mnist.
    data.data_dir = ""  # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets; a gs:// path works on TPU).
    data.num_frames = 8  # Frames per training clip.
    data.frame_stride = 1  # Take every n-th frame of the source video.
    data.resolution = 16  # Frames are resized (antialiased) to resolution x resolution.
    data.num_image_frames = 0  # Independent image frames appended to each video (joint training, VDM §3, §4.3.1).
    data.random_flip = False  # Random horizontal flips of whole clips.
    data.shuffle_buffer = 512  # tf.data shuffle buffer, in examples.
    data.video_dir = ""  # video_folder only: the directory of videos (optional class subfolders).
    data.captions_file = ""  # video_folder only: optional file of `relative/path.mp4<TAB>caption` lines.
    data.text_max_length = 64  # Tokens per caption (byte-level tokenizer), padded or truncated.
    data.moving_shapes_train_size = 4096  # moving_shapes only: train clips generated (16x32x32: ~15 s).
    data.moving_shapes_test_size = 512  # moving_shapes only: test clips generated (evaluation's real videos).
    data.long_range_prob = 0.0  # Share of training clips that are long-range windows (frame-conditioned models).
    data.long_range_span = 32  # Frames a training clip's num_frames are picked from when long_range_prob > 0.
    data.long_range_null_prob = 0.0  # Share of long-range windows that know no frame (frame guidance's null branch).

    # ---------------------------------------------------------------- model (vdm_jax.models.ModelConfig)
    config.model = model = ml_collections.ConfigDict()
    model.channels = 3  # Channels of the video (input and output).
    model.base_channels = 32  # Channels at the highest resolution.
    model.channel_mults = (1, 2)  # Channel multiplier per resolution level; len - 1 downsamplings (space only).
    model.num_res_blocks = 1  # ResNet blocks per resolution level.
    model.attn_resolutions = (8,)  # Spatial sizes (H) at which spatial + temporal attention blocks run.
    model.temporal_attn_resolutions = ()  # Further sizes with temporal attention alone (cheap: T frames per pixel).
    model.head_dim = 32  # Channels per attention head.
    model.dropout = 0.0  # Dropout in ResNet blocks (VDM UCF-101: 0.1).
    model.emb_dim = 128  # Width of the noise-level / conditioning embedding fed to FiLM.
    model.emb_mlp_layers = 2  # Dense layers of the noise-level embedding MLP (VDM: 4 UCF-101, 2 BAIR and Kinetics).
    model.temporal_attention = True  # False: an image model applied frame by frame.
    model.temporal_identity_init = False  # Zero-init temporal output projections (start a video model from images).
    model.num_classes = 0  # Class-conditional with this many classes (0 = no class conditioning).
    model.text_conditioning = "none"  # none | builtin (byte-level encoder, trained with it) | precomputed (library).
    model.text_embed_dim = 128  # Width of text token embeddings (builtin encoder width, or the external encoder's).
    model.text_encoder_layers = 2  # Transformer layers of the builtin text encoder.
    model.frame_conditioning = False  # Known frames + mask channel concatenated to the input (prediction models).
    model.known_frames_noise = 0.0  # Max std of training noise on known frames (needs the flag above); 0 = off.
    model.cond_drop_prob = 0.1  # Probability of replacing class/text conditioning by null in training (CFG).
    model.dtype = "float32"  # Compute dtype: float32 | bfloat16 (parameters stay float32).
    model.remat_policy = "none"  # Rematerialisation per block: none | full | dots | dots_no_batch (jax policies).
    model.attention_impl = "xla"  # jax.nn.dot_product_attention backend: xla | cudnn (fused; NVIDIA GPU, bfloat16).
    model.spatial_attention = "softmax"  # softmax | linear (O(HW) linear attention outside the middle block).

    # ---------------------------------------------------------------- diffusion (vdm_jax.diffusion.DiffusionConfig)
    config.diffusion = diffusion = ml_collections.ConfigDict()
    diffusion.schedule = "cosine"  # cosine | shifted_cosine | linear: the log-SNR schedule lambda(t).
    diffusion.logsnr_min = -20.0  # lambda at t = 1.
    diffusion.logsnr_max = 20.0  # lambda at t = 0.
    diffusion.shift_base_resolution = 64  # shifted_cosine: lambda + 2 log(base / data.resolution); ends stay min/max.
    diffusion.parameterization = "v"  # What the network predicts: eps | v | x.
    diffusion.loss_weighting = "v_mse"  # eps_mse | v_mse | x_mse | truncated_snr | min_snr.
    diffusion.min_snr_gamma = 5.0  # min_snr weighting: min(SNR, gamma) (Hang et al. 2023).
    diffusion.timesteps = 0  # 0 = continuous time; N > 0 = t on a grid of N steps in training.
    diffusion.low_discrepancy = True  # Low-discrepancy t-sampler across the batch (Kingma et al. 2021).

    # ---------------------------------------------------------------- sampler (vdm_jax.diffusion.SamplerConfig)
    config.sampler = sampler = ml_collections.ConfigDict()
    sampler.name = "ancestral"  # ancestral | ddim | pc (predictor-corrector) | dpm_solver (DPM-Solver++(2M)).
    sampler.num_steps = 100  # Sampling steps (network evaluations per step: 1; pc: 1 + corrector steps).
    sampler.gamma = 0.1  # ancestral/pc: variance interpolation exponent (VDM: 0.1 UCF-101, 0 BAIR + Kinetics).
    sampler.eta = 0.0  # ddim: 0 = deterministic DDIM, 1 = DDPM-like.
    sampler.corrector_steps = 1  # pc: Langevin corrector steps per predictor step.
    sampler.langevin_delta = 0.1  # pc: Langevin step size factor (VDM: 0.1).
    sampler.guidance_weight = 0.0  # Classifier-free guidance w: (1 + w) eps(z, c) - w eps(z, null).
    sampler.clip_x = True  # Clip x-hat to [-1, 1] in each step.
    sampler.dynamic_threshold = 0.0  # > 0: dynamic thresholding percentile (Imagen), e.g. 0.995; 0 = off.
    sampler.recon_guidance_weight = 0.0  # Reconstruction guidance w_r for known frames (VDM §3.1; BAIR: 50).
    sampler.frame_guidance_weight = 0.0  # Frame-conditioned models: guidance w on the known frames (0 = off).

    # ---------------------------------------------------------------- train (vdm_jax.train.TrainConfig)
    config.train = train = ml_collections.ConfigDict()
    train.num_steps = 2000  # Optimizer steps.
    train.batch_size = 8  # Global batch (videos), split over the mesh's data axes.
    train.learning_rate = 2e-3  # Peak learning rate.
    train.warmup_steps = 100  # Linear warm-up from 0.
    train.lr_schedule = "cosine"  # constant | cosine (decay to 0 at num_steps), after warm-up.
    train.b1 = 0.9  # Adam beta1.
    train.b2 = 0.99  # Adam beta2 (VDM UCF-101: 0.99).
    train.weight_decay = 0.0  # AdamW decoupled weight decay.
    train.grad_clip = 1.0  # Global-norm gradient clipping (0 = off; VDM's appendix states none).
    train.ema_decay = 0.995  # EMA of the parameters, used for sampling and evaluation.
    train.ema_warmup = True  # Effective decay min(ema_decay, (1 + step) / (10 + step)); False: ema_decay from step 0.
    train.grad_accum_steps = 1  # Micro-batches accumulated per optimizer step.
    train.log_every = 50  # Steps between metric writes (each checkpoint step is one too).
    train.checkpoint_every = 500  # Steps between (asynchronous) checkpoints.
    train.keep_checkpoints = 3  # Checkpoints kept.
    train.sample_every = 500  # Steps between sample grids (GIF + MP4 + TensorBoard); 0 = only at the end.
    train.num_samples = 8  # Videos per sample grid.
    train.eval_every = 500  # Steps between evaluations (config.eval); 0 = only at the end.
    train.init_from = ""  # Checkpoint directory to start from (loads what matches, e.g. image -> video model).
    train.context_pool = ""  # npz of clips with the model's own known frames (benchmarks/own_context.py); '' = off.
    train.context_pool_fraction = 0.5  # Share of each batch drawn from context_pool (frame-conditioned models).

    # ---------------------------------------------------------------- eval (vdm_jax.evaluation.EvalConfig)
    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.metrics = ("temporal",)  # Any of: fvd (needs .[eval]), temporal (moving_shapes only), warp_error.
    evaluation.num_samples = 16  # Sampled videos per evaluation (FVD: 2048 for UCF-101 as in TATS; BAIR: 100 x 256).
    evaluation.batch_size = 16  # Videos per sampling / feature batch.
    evaluation.cache_dir = ""  # Where real-data FVD statistics are cached ('' = <data_dir>/fvd_stats).
    evaluation.num_cond_frames = 0  # 0: unconditional samples; k: predict from each test clip's first k frames.
    evaluation.samples_per_clip = 1  # Samples per test clip; FVD's real side: num_samples / samples_per_clip clips.

    # ---------------------------------------------------------------- parallel
    config.parallel = parallel = ml_collections.ConfigDict()
    parallel.mesh_shape = (-1, 1, 1)  # Devices along (data, fsdp, tensor: 1); one -1 fills the remaining devices.
    parallel.rules = "data_parallel"  # Logical-axis rule preset: data_parallel | fsdp.
    return config
