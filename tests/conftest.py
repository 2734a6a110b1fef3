"""Fixtures shared across the test suite."""

import pytest

# Small embedded-dataset splits for tests: building them takes about a second.
SMALL_SPLITS = ("--config.data.moving_shapes_train_size=64", "--config.data.moving_shapes_test_size=16")


@pytest.fixture(scope="session")
def moving_shapes_dir(tmp_path_factory) -> str:
    """A TFDS data_dir shared by the session's training runs; each run builds the moving_shapes variant it needs
    on first use (as main.py does for a user), later runs find it there."""
    return str(tmp_path_factory.mktemp("tfds"))
