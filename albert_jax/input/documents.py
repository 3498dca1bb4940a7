"""The record format between corpus preparation and instance creation: one tokenized document per record.

A document is a list of sentences, each an int32 array of token ids. On disk (one ArrayRecord record per
document) it is little-endian int32: [n_sentences, len_0, ..., len_{n-1}, tokens of all sentences...].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def encode_document(sentences: Sequence[Sequence[int] | np.ndarray]) -> bytes:
    """Serializes a tokenized document (list of sentences of token ids) to bytes."""
    arrays = [np.asarray(s, dtype="<i4").reshape(-1) for s in sentences]
    header = np.asarray([len(arrays)] + [a.size for a in arrays], dtype="<i4")
    return header.tobytes() + b"".join(a.tobytes() for a in arrays)


def decode_document(record: bytes) -> list[np.ndarray]:
    """Inverse of `encode_document`; raises ValueError on a truncated or malformed record."""
    flat = np.frombuffer(record, dtype="<i4")
    if flat.size == 0 or flat[0] < 0 or flat.size < 1 + flat[0]:
        raise ValueError(f"malformed document record ({len(record)} bytes)")
    count = int(flat[0])
    lengths = flat[1:1 + count]
    tokens = flat[1 + count:]
    if lengths.min(initial=0) < 0 or int(lengths.sum()) != tokens.size:
        raise ValueError(f"malformed document record: lengths sum to {int(lengths.sum())}, "
                         f"{tokens.size} tokens present")
    return np.split(tokens.astype(np.int32), np.cumsum(lengths)[:-1]) if count else []
