"""The embedded `moving_shapes` dataset's vocabulary: colours, shapes and background.

Shared by the dataset generator (`vdm_jax.data`) and the temporal-consistency metrics (`vdm_jax.evaluation`), which
detect objects by colour. The colours are saturated and pairwise far apart in RGB so that a per-pixel nearest-colour
assignment is unambiguous.

Ground truth stored with every example (K = MAX_OBJECTS, padded; T frames):
  num_objects: int32 []            1..MAX_OBJECTS
  shape:       int32 [K]           index into SHAPES (padding: -1)
  color:       int32 [K]           index into PALETTE (padding: -1)
  size:        float32 [K]         radius in pixels (circle: radius; square: half side; triangle: circumradius)
  position:    float32 [T, K, 2]   centre (row, col) in pixels, frame by frame (padding: -1)
"""

import numpy as np

MAX_OBJECTS = 3

SHAPES = ("circle", "square", "triangle")

# Name -> RGB (uint8). Distinct, saturated, and all far from the background.
PALETTE_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
PALETTE = np.array(
    [
        [230, 25, 25],
        [25, 200, 25],
        [30, 60, 230],
        [240, 220, 20],
        [220, 30, 220],
        [20, 220, 230],
    ],
    dtype=np.uint8,
)

BACKGROUND = np.array([20, 20, 20], dtype=np.uint8)  # near-black, plain
