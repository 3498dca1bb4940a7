"""Record codecs between instance creation and the loader: one training instance per ArrayRecord record.

Two record kinds, both little-endian int32 words:

* instance (dynamic masking): ``[INSTANCE_MAGIC, n, a_end, label, kind] + tokens[n]`` where ``tokens`` is the
  whole unmasked sequence ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]`` for a single segment), ``a_end`` the
  number of segment-0 tokens (``[CLS] A [SEP]``), ``label`` the sentence label and ``kind`` how the pair was
  made (`KIND_NAMES`). The loader masks it afresh every epoch.
* example (static masking): ``[EXAMPLE_MAGIC, n, a_end, label, kind, p, g] + counts[g] + tokens[n] +
  positions[p] + ids[p]``: the masked sequence, the ``p`` masked positions and their original ids, and the
  number of masked spans of 1..g words (kept for the statistics command).

Records are stored unpadded; `decode_instances` / `decode_examples` turn a list of records into fixed-size
batch arrays in a handful of vectorised NumPy operations (no per-token Python work), and flag malformed
records instead of raising, so that one bad record cannot kill a loader worker.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

INSTANCE_MAGIC = 0x31494C41  # b"ALI1"
EXAMPLE_MAGIC = 0x31454C41  # b"ALE1"
INSTANCE_HEADER = 5
EXAMPLE_HEADER = 7

KIND_IN_ORDER = 0  # A then B from the same chunk, label 0
KIND_SWAPPED = 1  # SOP negative: B then A, label 1
KIND_RANDOM_NEXT = 2  # B taken from a random other document, label 1
KIND_SINGLE = 3  # one segment only ([CLS] A [SEP]), label 0
KIND_NAMES = ("in_order", "swapped", "random_next", "single_segment")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the special pieces; the defaults are the reference vocabulary's (<pad>=0 ... [MASK]=4)."""

    pad: int = 0
    unk: int = 1
    cls: int = 2
    sep: int = 3
    mask: int = 4

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def encode_instance(tokens: np.ndarray, a_end: int, label: int, kind: int) -> bytes:
    """Serializes one unmasked instance (`tokens` already laid out with [CLS]/[SEP])."""
    tokens = np.asarray(tokens, dtype="<i4")
    header = np.asarray([INSTANCE_MAGIC, tokens.size, a_end, label, kind], dtype="<i4")
    return header.tobytes() + tokens.tobytes()


def encode_example(tokens: np.ndarray, a_end: int, label: int, kind: int, positions: np.ndarray,
                   ids: np.ndarray, ngram_counts: np.ndarray) -> bytes:
    """Serializes one masked example; `positions`/`ids` hold only the real (unpadded) predictions."""
    tokens = np.asarray(tokens, dtype="<i4")
    positions = np.asarray(positions, dtype="<i4")
    counts = np.asarray(ngram_counts, dtype="<i4")
    header = np.asarray([EXAMPLE_MAGIC, tokens.size, a_end, label, kind, positions.size, counts.size],
                        dtype="<i4")
    return b"".join([header.tobytes(), counts.tobytes(), tokens.tobytes(), positions.tobytes(),
                     np.asarray(ids, dtype="<i4").tobytes()])


def record_magic(record: bytes) -> int | None:
    """The magic word of a record, or None when it is too short to have one."""
    return int(np.frombuffer(record[:4], dtype="<i4")[0]) if len(record) >= 4 else None


def _concat(records: Sequence[bytes], header: int, magic: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """Joins records into one int32 buffer; returns (flat, start word, size in words, plausible mask)."""
    sizes = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    ok = (sizes % 4 == 0) & (sizes >= 4 * header)
    if not ok.all():
        records = [r if good else b"" for r, good in zip(records, ok)]
        sizes = np.where(ok, sizes, 0)
    flat = np.frombuffer(b"".join(records), dtype="<i4")
    words = sizes // 4
    starts = np.cumsum(words) - words
    if flat.size:
        ok &= flat[np.minimum(starts, flat.size - 1)] == magic
    starts = np.where(ok, starts, 0)
    return flat, starts, np.where(ok, words, 0), ok


def _field(flat: np.ndarray, starts: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    """Header word `k` of every record (0 for implausible records)."""
    if not flat.size:
        return np.zeros(starts.shape, np.int64)
    return np.where(ok, flat[np.minimum(starts + k, flat.size - 1)], 0).astype(np.int64)


def _gather(flat: np.ndarray, offsets: np.ndarray, counts: np.ndarray, width: int, fill: int) -> np.ndarray:
    """[B, width] int32: row b holds flat[offsets[b] : offsets[b] + counts[b]] then `fill`."""
    j = np.arange(width)
    inside = j[None, :] < counts[:, None]
    if not flat.size:
        return np.full((len(counts), width), fill, np.int32)
    index = np.where(inside, offsets[:, None] + j[None, :], 0)
    return np.where(inside, flat[index], fill).astype(np.int32)


def _layout(n: np.ndarray, a_end: np.ndarray, ok: np.ndarray, max_seq_length: int) -> tuple[np.ndarray,
                                                                                            np.ndarray]:
    """input_mask and segment_ids from lengths and segment boundaries."""
    j = np.arange(max_seq_length)[None, :]
    real = (j < n[:, None]) & ok[:, None]
    return real.astype(np.int32), (real & (j >= a_end[:, None])).astype(np.int32)


def _drop_out_of_vocab(input_ids: np.ndarray, n: np.ndarray, ok: np.ndarray, vocab_size: int | None,
                       pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Marks rows holding ids outside [0, vocab_size) invalid (in place on `ok`) and blanks them."""
    if vocab_size is not None and input_ids.size:
        ok &= (input_ids.min(axis=1) >= 0) & (input_ids.max(axis=1) < vocab_size)
        input_ids[~ok] = pad_id
        n = np.where(ok, n, 0)
    return input_ids, n


def decode_instances(records: Sequence[bytes], max_seq_length: int, pad_id: int = 0,
                     vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Decodes unmasked instance records into fixed-size arrays.

    Returns input_ids, input_mask, segment_ids [B, L], sentence_labels, instance_kind, lengths [B] and
    `valid` [B] (False for a malformed record, a record of the wrong kind, one longer than `max_seq_length`
    or, given `vocab_size`, one holding ids outside the vocabulary; its row is all padding).
    """
    flat, starts, words, ok = _concat(records, INSTANCE_HEADER, INSTANCE_MAGIC)
    n, a_end = _field(flat, starts, ok, 1), _field(flat, starts, ok, 2)
    ok &= (n >= 2) & (n <= max_seq_length) & (words == INSTANCE_HEADER + n) & (a_end >= 2) & (a_end <= n)
    n = np.where(ok, n, 0)
    input_ids = _gather(flat, starts + INSTANCE_HEADER, n, max_seq_length, pad_id)
    input_ids, n = _drop_out_of_vocab(input_ids, n, ok, vocab_size, pad_id)
    input_mask, segment_ids = _layout(n, a_end, ok, max_seq_length)
    return {
        "input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
        "sentence_labels": _field(flat, starts, ok, 3).astype(np.int32),
        "instance_kind": _field(flat, starts, ok, 4).astype(np.int32),
        "lengths": n.astype(np.int32), "valid": ok,
    }


def decode_examples(records: Sequence[bytes], max_seq_length: int, max_predictions: int,
                    max_ngram: int, pad_id: int = 0, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Decodes masked example records into the model's fixed-size arrays (plus `valid`, `ngram_counts`)."""
    flat, starts, words, ok = _concat(records, EXAMPLE_HEADER, EXAMPLE_MAGIC)
    n, a_end = _field(flat, starts, ok, 1), _field(flat, starts, ok, 2)
    p, g = _field(flat, starts, ok, 5), _field(flat, starts, ok, 6)
    ok &= ((n >= 2) & (n <= max_seq_length) & (a_end >= 2) & (a_end <= n) & (p >= 0)
           & (p <= max_predictions) & (g == max_ngram) & (words == EXAMPLE_HEADER + g + n + 2 * p))
    n, p, g = (np.where(ok, x, 0) for x in (n, p, g))
    tokens_at = starts + EXAMPLE_HEADER + g
    input_ids = _gather(flat, tokens_at, n, max_seq_length, pad_id)
    positions = _gather(flat, tokens_at + n, p, max_predictions, 0)
    ids = _gather(flat, tokens_at + n + p, p, max_predictions, 0)
    ok &= np.all((positions < np.maximum(n, 1)[:, None]) & (positions >= 0), axis=1)
    if vocab_size is not None and ids.size:
        ok &= (ids.min(axis=1) >= 0) & (ids.max(axis=1) < vocab_size)
    input_ids, n = _drop_out_of_vocab(input_ids, n, ok, vocab_size, pad_id)
    input_ids[~ok], positions[~ok], ids[~ok] = pad_id, 0, 0
    n, p = np.where(ok, n, 0), np.where(ok, p, 0)
    counts = _gather(flat, starts + EXAMPLE_HEADER, g, max_ngram, 0)
    counts[~ok] = 0
    input_mask, segment_ids = _layout(n, a_end, ok, max_seq_length)
    weights = (np.arange(max_predictions)[None, :] < p[:, None]).astype(np.float32)
    return {
        "input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
        "masked_lm_positions": positions, "masked_lm_ids": ids, "masked_lm_weights": weights,
        "sentence_labels": _field(flat, starts, ok, 3).astype(np.int32),
        "instance_kind": _field(flat, starts, ok, 4).astype(np.int32),
        "ngram_counts": counts,
        "lengths": n.astype(np.int32), "valid": ok,
    }
