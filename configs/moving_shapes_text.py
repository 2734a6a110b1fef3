"""Text-to-video on the embedded dataset: captions ("a red circle moving up and to the left ...") through the
built-in byte-level text encoder, cross-attention, classifier-free guidance.

  python main.py --config=configs/moving_shapes_text.py --workdir=runs/moving_shapes_text
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.text_max_length = 144  # Bytes: the longest caption of the default splits, any frame, is 143.
    config.model.text_conditioning = "builtin"
    config.model.text_embed_dim = 64
    config.model.text_encoder_layers = 2
    config.model.cond_drop_prob = 0.1
    config.sampler.guidance_weight = 1.0
    return config
