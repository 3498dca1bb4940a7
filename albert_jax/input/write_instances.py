"""Writes training instances to ArrayRecord, streaming: dynamic (unmasked) or static (masked, dupe_factor copies).

`albert-jax data instances` is the command line. Output directory layout, read by the loader:

  <output_dir>/meta.json                         what was written and how (format, mode, files, lengths, vocab
                                                 size, special ids, configs, counts); written last.
  <output_dir>/word_start.npy                    the whole-word table used (masking at load time, statistics)
  <output_dir>/instances-00000-of-00004.array_record   dynamic: `records.encode_instance` records
  <output_dir>/examples-00000-of-00004.array_record    static: `records.encode_example` records

Output shard s holds documents s, s + S, ... of the input for copy 0, then copy 1, ...; shards are made by
separate processes and each reads the input through its own random-access ArrayRecord source, so memory stays
at one batch of instances per process whatever the corpus size. Documents, copies and masks are seeded per
(seed, document, copy), so the output does not depend on the number of shards or workers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import re
from typing import Sequence

import numpy as np

from albert_jax.input.instances import InstanceConfig, InstanceCounts, InstanceMaker
from albert_jax.input.masking import Masker, MaskingConfig
from albert_jax.input.records import SpecialIds, encode_example, encode_instance

META_FILE = "meta.json"
WORD_START_FILE = "word_start.npy"
FORMATS = {"dynamic": "albert-jax-instances-v1", "static": "albert-jax-examples-v1"}
PREFIXES = {"dynamic": "instances", "static": "examples"}
_MASK_BATCH = 256


class EmptyDatasetError(ValueError):
    """Raised when a source yields no usable instance."""


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Everything one worker needs to write one output shard (picklable)."""

    inputs: tuple[str, ...]
    output_path: str
    shard: int
    num_shards: int
    mode: str
    instance_config: InstanceConfig
    masking_config: MaskingConfig
    vocab_size: int
    word_start: np.ndarray | None
    special: SpecialIds
    seed: int
    dupe_factor: int
    writer_options: str


def _open_source(paths: Sequence[str]) -> Sequence[bytes]:
    import grain  # deferred: spawn workers import only what they use

    return grain.sources.ArrayRecordDataSource(list(paths))


def write_shard(job: ShardJob, source: Sequence[bytes] | None = None) -> InstanceCounts:
    """Writes one output shard; returns its counts (document problems counted once, not per copy)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    source = source if source is not None else _open_source(job.inputs)
    maker = InstanceMaker(source, job.instance_config, job.special, job.seed, job.vocab_size)
    masker = (Masker(job.masking_config, job.vocab_size, job.word_start, job.special, job.seed)
              if job.mode == "static" else None)
    counts = InstanceCounts()
    writer = ArrayRecordWriter(job.output_path, job.writer_options)
    pending: list[tuple[int, int, int, np.ndarray, int, int, int]] = []
    try:
        for dupe in range(job.dupe_factor):
            copy_counts = counts if dupe == 0 else InstanceCounts()
            for document in range(job.shard, len(source), job.num_shards):
                instances = maker.document_instances(document, dupe, copy_counts)
                for j, instance in enumerate(instances):
                    if masker is None:
                        writer.write(encode_instance(*instance))
                    else:
                        pending.append((document, dupe, j) + tuple(instance))
                if len(pending) >= _MASK_BATCH:
                    _write_masked(writer, masker, pending, job.instance_config.max_seq_length, job.special)
                    pending = []
            if dupe:
                for name in ("single_segment_chunks", "skipped_chunks", "instances"):
                    setattr(counts, name, getattr(counts, name) + getattr(copy_counts, name))
                counts.kinds = [a + b for a, b in zip(counts.kinds, copy_counts.kinds)]
        if pending:
            _write_masked(writer, masker, pending, job.instance_config.max_seq_length, job.special)
    finally:
        writer.close()
    return counts


def _write_masked(writer, masker: Masker, pending: list, max_seq_length: int, special: SpecialIds) -> None:
    """Masks a batch of instances (key: document; epoch: copy << 20 | index in document) and writes them."""
    lengths = np.asarray([item[3].size for item in pending])
    ids = np.full((len(pending), max_seq_length), special.pad, np.int32)
    for row, item in enumerate(pending):
        ids[row, :item[3].size] = item[3]
    keys = np.asarray([item[0] for item in pending], np.uint64)
    epochs = np.asarray([(item[1] << 20) | item[2] for item in pending], np.uint64)
    masked = masker(ids, lengths, keys, epochs)
    predictions = masked["masked_lm_weights"].sum(axis=1).astype(int)
    for row, (_, _, _, _, a_end, label, kind) in enumerate(pending):
        p = predictions[row]
        writer.write(encode_example(masked["input_ids"][row, :lengths[row]], a_end, label, kind,
                                    masked["masked_lm_positions"][row, :p], masked["masked_lm_ids"][row, :p],
                                    masked["ngram_counts"][row]))


def write_instances(inputs: Sequence[str] | Sequence[bytes], output_dir: str, *, mode: str = "dynamic",
                    instance_config: InstanceConfig | None = None, masking_config: MaskingConfig | None = None,
                    vocab_size: int, word_start: np.ndarray | None = None, special: SpecialIds = SpecialIds(),
                    seed: int = 0, dupe_factor: int = 1, num_shards: int = 1, num_workers: int = 1,
                    writer_options: str = "group_size:1", extra_meta: dict | None = None) -> dict:
    """Writes instances of every document of `inputs` to `output_dir`; returns the meta.json contents.

    `inputs` is a list of ArrayRecord paths of `documents.encode_document` records (shards run in `num_workers`
    processes), or any in-memory random-access sequence of such records (shards run in this process).
    `writer_options` go to the ArrayRecord writer: group size 1 is what random access needs; the default
    compression (zstd:3) halves the files, "group_size:1,uncompressed" reads ~5 us per record faster.
    Raises EmptyDatasetError when nothing usable comes out.
    """
    if not re.search(r"(^|,)group_size:1(,|$)", writer_options.replace(" ", "")):
        raise ValueError(f"writer_options={writer_options!r} must keep group_size:1 (random access per record)")
    if mode not in FORMATS:
        raise ValueError(f"mode={mode!r} is not one of {tuple(FORMATS)}")
    if dupe_factor < 1 or num_shards < 1 or num_workers < 1:
        raise ValueError(f"dupe_factor={dupe_factor}, num_shards={num_shards}, num_workers={num_workers} must be "
                         f">= 1")
    instance_config = instance_config or InstanceConfig()
    masking_config = masking_config or MaskingConfig()
    if word_start is not None:
        word_start = np.asarray(word_start, bool)
    if mode == "static":
        Masker(masking_config, vocab_size, word_start, special, seed)  # validate before starting workers
    paths = list(inputs) if inputs and all(isinstance(x, str) for x in inputs) else None
    if paths is not None:
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"input files do not exist: {missing[:5]}")
    if len(inputs) == 0:
        raise EmptyDatasetError("no input documents (empty list of files or records)")
    os.makedirs(output_dir, exist_ok=True)
    if paths and os.path.abspath(output_dir) in {os.path.dirname(os.path.abspath(p)) for p in paths}:
        raise ValueError(f"output_dir {output_dir} holds the input documents; write instances elsewhere")
    stale = [META_FILE] + [os.path.basename(p) for prefix in PREFIXES.values()
                           for p in glob.glob(os.path.join(output_dir, f"{prefix}-*-of-*.array_record"))]
    for name in stale:
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    names = [f"{PREFIXES[mode]}-{s:05d}-of-{num_shards:05d}.array_record" for s in range(num_shards)]
    jobs = [ShardJob(tuple(paths or ()), os.path.join(output_dir, name), s, num_shards, mode, instance_config,
                     masking_config, vocab_size, word_start, special, seed, dupe_factor, writer_options)
            for s, name in enumerate(names)]
    counts = InstanceCounts()
    if paths is None or num_workers == 1:
        source = None if paths is not None else inputs
        for job in jobs:
            counts.merge(write_shard(job, source))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(num_workers, num_shards), mp_context=context) as pool:
            for shard_counts in pool.map(write_shard, jobs):
                counts.merge(shard_counts)
    if counts.instances == 0:
        raise EmptyDatasetError(f"no instances were made from {counts.documents} documents: "
                                f"{json.dumps(counts.as_dict())}")
    if word_start is not None:
        np.save(os.path.join(output_dir, WORD_START_FILE), word_start)
    meta = {
        "format": FORMATS[mode], "mode": mode, "files": names, "num_records": counts.instances,
        "max_seq_length": instance_config.max_seq_length, "vocab_size": vocab_size,
        "special": special.as_dict(), "seed": seed, "dupe_factor": dupe_factor,
        "word_start": WORD_START_FILE if word_start is not None else None,
        "instance_config": dataclasses.asdict(instance_config),
        "masking_config": dataclasses.asdict(masking_config) if mode == "static" else None,
        "counts": counts.as_dict(), **(extra_meta or {}),
    }
    path = os.path.join(output_dir, META_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump(meta, handle, indent=1)
    os.replace(path + ".tmp", path)
    return meta
