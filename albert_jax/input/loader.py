"""The training/eval input pipeline: grain over instance files, per-host sharded, deterministic, resumable.

`make_loader(split, global_batch_size, process_index, process_count, seed)` reads the directory written by
`python -m albert_jax.input.write_instances` (`InputConfig.train_dir` / `eval_dir`) and yields this process's
part of every global batch as a dict of NumPy arrays:

  input_ids, input_mask, segment_ids        [B, max_seq_length] int32
  masked_lm_positions, masked_lm_ids        [B, max_predictions_per_seq] int32
  masked_lm_weights                         [B, max_predictions_per_seq] float32
  sentence_labels                           [B] int32 (1 = swapped / random B)
  example_weights                           [B] float32: 0 for padding rows (end of a finite eval pass) and
                                            for unreadable records, 1 otherwise
  (with InputConfig.diagnostics: ngram_counts [B, max_ngram], instance_kind, record_key, epoch [B])

`to_global_batch(batch, sharding_or_mesh)` turns it into global jax.Arrays.

Order and randomness. There is one global stream of record positions, the same for any number of processes:
position p is in epoch p // N (N records) and names record `epoch_permutation(p % N, N, seed, epoch)` (a
vectorised Feistel network with cycle walking: the same kind of random-access shuffle as grain's index_shuffle,
which costs ~11 us per index, computed for a whole batch of positions at once). Global batch k is positions
[k*G, (k+1)*G); process i of n reads only its rows [k*G + i*G/n, k*G + (i+1)*G/n), so the processes read
disjoint records that together cover the dataset, and the global batch at step k does not depend on how many
processes share it. Each process's batch is one pure function of k (grain `MapDataset.map`): it reads the
records and, in dynamic mode, draws fresh masks keyed by (seed, record key, epoch) (`masking.Masker`). Hence
batch k is the same whatever the number of worker processes or hosts, and after a restart: the iterator
state is just the next step (`get_state` / `set_state`).

Workers: `num_workers` > 0 builds batches in that many processes (grain `mp_prefetch`, batch k on worker
k mod num_workers, outputs interleaved back in order); `read_threads` threads prefetch within each process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from typing import Any, Iterator, Mapping, Sequence

import gin
import grain
import numpy as np

from albert_jax.input.masking import Masker, MaskingConfig, mix64, random_bits
from albert_jax.input.records import SpecialIds, decode_examples, decode_instances, record_magic
from albert_jax.input.records import EXAMPLE_MAGIC, INSTANCE_MAGIC
from albert_jax.input.write_instances import FORMATS, META_FILE, EmptyDatasetError

SPLITS = ("train", "eval")
MODEL_KEYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
              "masked_lm_weights", "sentence_labels", "example_weights")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Where the data is and how it is read; masking itself is `MaskingConfig` (dynamic mode)."""

    train_dir: str = ""  # output directory of write_instances for training
    eval_dir: str = ""  # ... for evaluation (a held-out split)
    num_workers: int = 0  # batch-building processes (grain mp_prefetch); 0 = in this process
    worker_buffer_size: int = 2  # batches each worker runs ahead
    read_threads: int = 1  # threads building batches within a process
    prefetch_batches: int = 2  # batches each process keeps ready
    shuffle_train: bool = True  # reshuffle the training shard every epoch
    eval_num_epochs: int = 1  # passes over the eval split (train repeats forever)
    diagnostics: bool = False  # also emit ngram_counts, instance_kind, record_key, epoch


def load_dataset_info(directory: str) -> dict:
    """meta.json of an instance directory, with absolute file paths; clear errors when absent or empty."""
    if not directory:
        raise ValueError("no data directory configured: set InputConfig.train_dir / eval_dir to the output of "
                         "`python -m albert_jax.input.write_instances`")
    path = os.path.join(directory, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: write instances with `python -m "
                                f"albert_jax.input.write_instances --output_dir {directory} ...`")
    with open(path) as handle:
        info = json.load(handle)
    if info.get("format") not in FORMATS.values():
        raise ValueError(f"{path} has format {info.get('format')!r}, expected one of {tuple(FORMATS.values())}")
    info["paths"] = [os.path.join(directory, name) for name in info["files"]]
    missing = [p for p in info["paths"] if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{directory}: files listed in meta.json are missing: {missing[:3]}")
    if info["num_records"] <= 0:
        raise EmptyDatasetError(f"{directory} holds no records (counts: {info.get('counts')})")
    return info


def epoch_permutation(index: np.ndarray, size: int, seed: int, epoch: np.ndarray, rounds: int = 6) -> np.ndarray:
    """Position -> element of a pseudo-random permutation of [0, size), one permutation per (seed, epoch).

    A balanced Feistel network on the smallest even number of bits covering `size` is a bijection of
    [0, 2^bits); values that land outside [0, size) are walked through it again ("cycle walking"), which keeps
    a bijection of [0, size) and needs fewer than 4 passes on average.
    """
    bits = max(2, int(size - 1).bit_length())
    bits += bits % 2
    half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)
    epoch = np.broadcast_to(np.asarray(epoch, np.uint64), np.shape(index))
    keys = [random_bits(seed, epoch.reshape(-1), np.full(epoch.size, r, np.uint64), 3, 1)[:, 0]
            for r in range(rounds)]
    out = np.asarray(index, np.uint64).reshape(-1).copy()
    todo = np.arange(out.size)
    while todo.size:
        x = out[todo]
        left, right = x >> half, x & mask
        for key in keys:
            left, right = right, left ^ (mix64(right ^ key[todo]) & mask)
        out[todo] = (left << half) | right
        todo = todo[out[todo] >= size]
    return out.reshape(np.shape(index)).astype(np.int64)


class BatchBuilder:
    """Batch k of one process as a pure function of k (picklable: it runs in grain worker processes)."""

    def __init__(self, source: Sequence[bytes], info: Mapping[str, Any], rows: tuple[int, int, int],
                 batch_size: int, num_positions: int | None, masker: Masker | None, masking: MaskingConfig,
                 seed: int, shuffle: bool, diagnostics: bool):
        """rows = (this process's first row in a global batch, global batch size, records per epoch)."""
        self.source = source
        self.mode = info["mode"]
        self.max_seq_length = int(info["max_seq_length"])
        self.pad_id = int(info["special"]["pad"])
        self.vocab_size = int(info["vocab_size"])
        (self.row_offset, self.global_batch, self.num_records) = rows
        self.batch_size, self.num_positions = batch_size, num_positions
        self.masker, self.masking, self.diagnostics = masker, masking, diagnostics
        self.seed, self.shuffle = seed, shuffle

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        positions = step * self.global_batch + self.row_offset + np.arange(self.batch_size)
        real = positions < self.num_positions if self.num_positions is not None else np.ones(self.batch_size,
                                                                                               bool)
        epochs = positions // self.num_records
        within = positions % self.num_records
        if self.shuffle:
            within = epoch_permutation(within, self.num_records, self.seed, epochs)
        keys = np.where(real, within, 0)
        epochs = epochs.astype(np.uint64)
        # One read per record: on local files this costs less CPU than ArrayRecord's threaded __getitems__.
        source = self.source
        records = [source[k] if ok else b"" for k, ok in zip(keys.tolist(), real.tolist())]
        if self.mode == "static":
            batch = decode_examples(records, self.max_seq_length, self.masking.max_predictions_per_seq,
                                    self.masking.max_ngram, self.pad_id, self.vocab_size)
        else:
            batch = decode_instances(records, self.max_seq_length, self.pad_id, self.vocab_size)
            batch |= self.masker(batch["input_ids"], batch["lengths"], keys.astype(np.uint64), epochs)
        valid = batch.pop("valid")
        batch.pop("lengths")
        batch["example_weights"] = valid.astype(np.float32)
        if self.diagnostics:
            batch["record_key"] = np.where(real, keys, -1)
            batch["epoch"] = np.where(real, epochs, 0).astype(np.int64)
        else:
            batch.pop("ngram_counts")
            batch.pop("instance_kind")
        return batch


def _absl_flags_ready() -> None:
    """grain's worker processes read absl flags; with no absl app around, take the defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class Loader:
    """Iterator over this process's batches; state = the next step, restorable anywhere (see module doc)."""

    def __init__(self, directory: str, *, batch_size: int, process_index: int = 0, process_count: int = 1,
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 masking: MaskingConfig | None = None, num_workers: int = 0, worker_buffer_size: int = 2,
                 read_threads: int = 1, prefetch_batches: int = 2, diagnostics: bool = False,
                 source: Sequence[bytes] | None = None):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.info = load_dataset_info(directory)
        self.directory = directory
        self.batch_size, self.process_index, self.process_count = batch_size, process_index, process_count
        self.seed, self.shuffle, self.num_epochs = int(seed), shuffle, num_epochs
        self.num_workers, self.worker_buffer_size = num_workers, worker_buffer_size
        self.read_threads, self.prefetch_batches = read_threads, prefetch_batches
        self.seq_length = int(self.info["max_seq_length"])
        if self.info["mode"] == "static":
            stored = self.info["masking_config"]
            self.masking = MaskingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
        else:
            self.masking = masking or MaskingConfig()
        self.source = source if source is not None else grain.sources.ArrayRecordDataSource(self.info["paths"])
        total = len(self.source)
        if total == 0:
            raise EmptyDatasetError(f"{directory}: the instance files hold no records")
        if total < process_count:
            raise EmptyDatasetError(f"{directory} has {total} records, fewer than the {process_count} processes")
        self._check_first_record()
        masker = None
        if self.info["mode"] == "dynamic":
            masker = Masker(self.masking, int(self.info["vocab_size"]), self._word_start(),
                            SpecialIds(**self.info["special"]), self.seed)
        self.num_records = total
        self.global_batch_size = batch_size * process_count
        # Every process runs the same number of steps: a finite pass ends with the global batch that holds its
        # last position; rows past it are padding (example_weights 0).
        self.num_batches = None if num_epochs is None else -(-total * num_epochs // self.global_batch_size)
        self._builder = BatchBuilder(self.source, self.info, (process_index * batch_size, self.global_batch_size,
                                                              total),
                                     batch_size, None if num_epochs is None else total * num_epochs,
                                     masker, self.masking, self.seed, shuffle, diagnostics)
        self._step = 0
        self._iterator: Iterator | None = None

    @property
    def max_predictions_per_seq(self) -> int:
        """MLM positions per sequence in every batch (the head runs on all of them, padded or not)."""
        return int(self.masking.max_predictions_per_seq)

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per pass over the data (rounded up)."""
        return -(-self.num_records // self.global_batch_size)

    def _word_start(self) -> np.ndarray | None:
        if not self.masking.whole_word:
            return None
        if not self.info.get("word_start"):
            raise ValueError(f"{self.directory} was written without a word-start table, needed for whole-word "
                             f"masking; rewrite it with --vocab, or set MaskingConfig.whole_word = False")
        return np.load(os.path.join(self.directory, self.info["word_start"]))

    def _check_first_record(self) -> None:
        """Fails early, in this process, on a directory of the wrong kind of records (none of the first 8 fit)."""
        expected = EXAMPLE_MAGIC if self.info["mode"] == "static" else INSTANCE_MAGIC
        magics = [record_magic(self.source[i]) for i in range(min(8, len(self.source)))]
        if expected not in magics:
            raise ValueError(f"{self.directory}: the first records are not {self.info['mode']} records (magic "
                             f"{magics[0]}); are these document files? Write instances with "
                             f"`python -m albert_jax.input.write_instances`")

    def element(self, step: int) -> dict[str, np.ndarray]:
        """Batch `step`, built directly in this process (what the iterator yields at that step)."""
        return self._builder(step)

    def _start(self) -> Iterator:
        stop = self.num_batches if self.num_batches is not None else sys.maxsize
        dataset = grain.MapDataset.range(min(self._step, stop), stop).map(self._builder)
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=max(self.read_threads, 1),
                                                            prefetch_buffer_size=max(self.prefetch_batches, 1)))
        if self.num_workers > 0:
            _absl_flags_ready()
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.num_workers, per_worker_buffer_size=self.worker_buffer_size))
        return iter(dataset)

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self._step += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        """JSON-serializable state: the next step plus what must match on restore."""
        return {"step": self._step, "seed": self.seed, "num_records": len(self.source), "mode": self.info["mode"],
                "global_batch_size": self.global_batch_size}

    def set_state(self, state: Mapping[str, Any] | bytes | str) -> None:
        """Continues from a `get_state()` result (also accepted JSON-encoded).

        Other data (seed, record count, mode) is an error. Another process count with the same global batch size
        continues exactly (the global stream does not depend on it). Another global batch size resumes at the
        same step with a warning: training goes on, but not as an exact continuation of the data order.
        """
        if isinstance(state, (bytes, str)):
            state = json.loads(state)
        current = self.get_state()
        differs = {k: (state.get(k), v) for k, v in current.items() if k != "step" and state.get(k) != v}
        data = {k: v for k, v in differs.items() if k in ("seed", "num_records", "mode")}
        if data:
            raise ValueError(f"iterator state was saved for other data (saved, current): {data}; the data order "
                             f"cannot continue where it stopped")
        if differs:
            warnings.warn(f"iterator state was saved with another global batch (saved, current): {differs}; resuming "
                          f"at step {state['step']}, but not as an exact continuation of the data order")
        self.close()
        self._step = int(state["step"])

    def close(self) -> None:
        """Stops worker processes (if any); iteration can start again afterwards."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean up
            pass


@gin.configurable
def make_loader(split: str, global_batch_size: int, process_index: int | None = None,
                process_count: int | None = None, seed: int = 0, config: InputConfig | None = None) -> Loader:
    """The loader of `split` ("train": shuffled, endless; "eval": in order, `eval_num_epochs` padded passes).

    Each process gets global_batch_size / process_count rows per step; the process index and count default to
    JAX's.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    config = config or InputConfig()
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} does not split over {process_count} processes")
    train = split == "train"
    return Loader(config.train_dir if train else config.eval_dir, batch_size=global_batch_size // process_count,
                  process_index=process_index, process_count=process_count, seed=seed,
                  shuffle=train and config.shuffle_train, num_epochs=None if train else config.eval_num_epochs,
                  num_workers=config.num_workers, worker_buffer_size=config.worker_buffer_size,
                  read_threads=config.read_threads, prefetch_batches=config.prefetch_batches,
                  diagnostics=config.diagnostics, masking=MaskingConfig())


@gin.configurable
def sentence_loss_weight(weight: float | None = None, config: InputConfig | None = None) -> float:
    """Weight of the sentence loss: `weight` if bound, else 0 for data made with objective 'none', else 1."""
    if weight is not None:
        return float(weight)
    config = config or InputConfig()
    if not config.train_dir:
        return 1.0
    objective = load_dataset_info(config.train_dir)["instance_config"]["sentence_objective"]
    return 0.0 if objective == "none" else 1.0


def to_global_batch(local_batch: Mapping[str, np.ndarray], sharding_or_mesh: Any,
                    batch_axes: Sequence[str] | None = None) -> dict[str, Any]:
    """Global jax.Arrays from every process's local rows (`jax.make_array_from_process_local_data`).

    `sharding_or_mesh`: a Sharding applied to every array (its first dimension is the batch), a dict of them
    per key, or a Mesh, in which case the batch is split over `batch_axes` (default: the mesh's "data" and
    "fsdp" axes, or all axes if it has neither).
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if isinstance(sharding_or_mesh, Mesh):
        names = tuple(sharding_or_mesh.axis_names)
        axes = tuple(batch_axes) if batch_axes else (tuple(a for a in names if a in ("data", "fsdp")) or names)
        sharding_or_mesh = NamedSharding(sharding_or_mesh, PartitionSpec(axes))
    out = {}
    for key, value in local_batch.items():
        sharding = sharding_or_mesh[key] if isinstance(sharding_or_mesh, Mapping) else sharding_or_mesh
        out[key] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return out
