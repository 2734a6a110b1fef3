"""Byte-level tokenizer: ids, padding, truncation and the round trip."""

import numpy as np

from vdm_jax.models import VOCAB_SIZE, detokenize, tokenize


def test_ids_are_bytes_plus_one_padded_with_zero():
    tokens = tokenize(["ab", ""], max_length=4)
    assert tokens.dtype == np.int32 and tokens.shape == (2, 4)
    np.testing.assert_array_equal(tokens, [[ord("a") + 1, ord("b") + 1, 0, 0], [0, 0, 0, 0]])


def test_round_trip_and_truncation():
    texts = ["a red square moves left", "ünïcödé ✓", "x" * 10]
    tokens = tokenize(texts, max_length=32)
    assert tokens.min() >= 0 and tokens.max() < VOCAB_SIZE
    assert detokenize(tokens) == texts
    assert detokenize(tokenize(["abcdef"], max_length=3)) == ["abc"]
