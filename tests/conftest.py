"""Fixtures and settings shared across the test suite."""

import os
import shutil
import sys
import tempfile

import pytest

# Small embedded-dataset splits for tests: building them takes about a second.
SMALL_SPLITS = ("--config.data.moving_shapes_train_size=64", "--config.data.moving_shapes_test_size=16")

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """Gives this test process (an xdist worker, or the only one) a persistent XLA compilation cache of its own,
    unless the user already set one. The training tests launch main.py many times with the same tiny model, and
    each launch spends about half its minute compiling on a 2-core CPU (30 s of 60-90 s); later launches of the
    same program load it instead. The environment variables reach the main.py subprocesses, which copy
    os.environ. One directory per process: JAX writes cache entries without a lock unless it also evicts, so two
    workers never share one."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        # Two workers on one GPU: each takes memory as it needs it instead of 75% up front.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if os.environ.get(_CACHE_ENV) or (workerinput is None and getattr(config.option, "numprocesses", None)):
        return  # The user's own cache; or the xdist controller, which runs no test (its workers make their own).
    worker = workerinput["workerid"] if workerinput else "main"
    path = tempfile.mkdtemp(prefix=f"vdm_jax_test_jit_cache_{worker}_")
    config._vdm_jax_jit_cache = path
    os.environ[_CACHE_ENV] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # tiny models compile in well under 1 s too
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    if "jax" in sys.modules:  # Imported already (a plugin): set the options directly as well.
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    path = getattr(config, "_vdm_jax_jit_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        if os.environ.get(_CACHE_ENV) == path:
            del os.environ[_CACHE_ENV]


@pytest.fixture(scope="session")
def moving_shapes_dir(tmp_path_factory) -> str:
    """A TFDS data_dir shared by the session's training runs; each run builds the moving_shapes variant it needs
    on first use (as main.py does for a user), later runs find it there."""
    return str(tmp_path_factory.mktemp("tfds"))
