"""Fine-tuning tasks: the GLUE definitions, readers (TFDS `glue/*` or local TSV/CSV files), features, metrics.

A `Task` says where the examples come from, which fields hold the one or two texts and the label, how many
labels there are (1 = regression) and which metrics the task reports; the first metric selects the best
evaluation. GLUE tasks are predefined (`GLUE`, field and label names as TFDS `glue/*` has them); any other
sentence or sentence-pair task is described entirely in gin (`make_task.*`, see docs/FINETUNE.md).

Features follow the original run_classifier: [CLS] a [SEP] (b [SEP]), segment ids 0 up to and including the
first [SEP] and 1 after, and a pair longer than max_seq_length - 3 is cut one token at a time from the end of
the longer text (of b on ties). Metrics are computed here in numpy on the host from all predictions of a split,
so they are exact whatever the batch size.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np

from albert_jax.input.tokenizer import CLS_ID, PAD_ID, SEP_ID, Tokenizer

Column = str | int


class TaskError(ValueError):
    """A task definition or data file that cannot be used; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One classification (num_labels >= 2) or regression (num_labels == 1) task over one or two texts."""

    name: str
    num_labels: int
    metrics: tuple[str, ...]
    text_a: Column
    text_b: Column | None
    label: Column = "label"
    label_names: tuple[str, ...] = ()  # label strings in id order (files may hold names or integer ids)
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    source: str = "tfds"  # 'tfds' (tfds_name under data_dir) or 'files' (files[split])
    tfds_name: str | None = None
    data_dir: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (split, path) pairs
    delimiter: str | None = None  # None: tab for .tsv, comma otherwise
    header: bool = True  # first line names the columns (columns may then be given by name)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


GLUE: dict[str, dict[str, Any]] = {  # field and label names as in TFDS glue/<name> (4.9)
    "cola": dict(text_a="sentence", text_b=None, num_labels=2, metrics=("mcc", "accuracy"),
                 label_names=("unacceptable", "acceptable")),
    "sst2": dict(text_a="sentence", text_b=None, num_labels=2, metrics=("accuracy",),
                 label_names=("negative", "positive")),
    "mrpc": dict(text_a="sentence1", text_b="sentence2", num_labels=2, metrics=("accuracy", "f1"),
                 label_names=("not_equivalent", "equivalent")),
    "qqp": dict(text_a="question1", text_b="question2", num_labels=2, metrics=("accuracy", "f1"),
                label_names=("not_duplicate", "duplicate")),
    "stsb": dict(text_a="sentence1", text_b="sentence2", num_labels=1, metrics=("pearson", "spearman")),
    "mnli": dict(text_a="premise", text_b="hypothesis", num_labels=3, metrics=("accuracy",),
                 label_names=("entailment", "neutral", "contradiction"),
                 eval_splits=("validation_matched", "validation_mismatched")),
    "qnli": dict(text_a="question", text_b="sentence", num_labels=2, metrics=("accuracy",),
                 label_names=("entailment", "not_entailment")),
    "rte": dict(text_a="sentence1", text_b="sentence2", num_labels=2, metrics=("accuracy",),
                label_names=("entailment", "not_entailment")),
    "wnli": dict(text_a="sentence1", text_b="sentence2", num_labels=2, metrics=("accuracy",),
                 label_names=("not_entailment", "entailment")),
}


@gin.configurable
def make_task(name: str = gin.REQUIRED, source: str = "tfds", data_dir: str | None = None,
              files: Mapping[str, str] | None = None, text_a: Column | None = None, text_b: Column | None = "",
              label: Column | None = None, num_labels: int | None = None, metrics: Sequence[str] | None = None,
              label_names: Sequence[str] | None = None, train_split: str = "train",
              eval_splits: Sequence[str] | None = None, delimiter: str | None = None, header: bool = True) -> Task:
    """The task to fine-tune on: a GLUE name (cola sst2 mrpc qqp stsb mnli qnli rte wnli) or any other name
    with its fields given here.

    Args:
      source: 'tfds' reads TFDS `glue/<name>` from `data_dir` (prepared beforehand: nothing downloads here);
        'files' reads `files`, a mapping split -> TSV/CSV path.
      text_a, text_b, label: columns (names with a header line, else 0-based indices) or TFDS fields; text_b None
        for single-sentence tasks. Left unset, a GLUE task's own fields are used.
      num_labels: 1 for regression, else the number of classes. metrics: from accuracy, f1, mcc, pearson,
        spearman; the first selects the best evaluation. label_names: label strings in id order.
      eval_splits: evaluated splits (default: the GLUE task's, or every files split but the train split).
      delimiter: field separator of the files (default tab for .tsv, comma otherwise); header: first line names
        the columns.
    """
    if source not in ("tfds", "files"):
        raise TaskError(f"make_task.source={source!r} is not 'tfds' or 'files'")
    glue = GLUE.get(name, {})
    if not glue and source == "tfds":
        close = difflib.get_close_matches(name, GLUE, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskError(f"task {name!r} is not a GLUE task{hint}; GLUE: {', '.join(GLUE)}. Other tasks read local "
                        "files: set make_task.source = 'files' and make_task.files, text_a, num_labels, metrics")
    if source == "files" and not files:
        raise TaskError(f"task {name!r} reads files but make_task.files is empty; give {{'train': PATH, "
                        "'validation': PATH}")
    fields = dict(glue)
    given = dict(text_a=text_a, label=label, num_labels=num_labels, metrics=metrics, label_names=label_names,
                 eval_splits=eval_splits)
    fields.update({key: value for key, value in given.items() if value is not None})
    if text_b != "":
        fields["text_b"] = text_b
    missing = [key for key in ("text_a", "num_labels", "metrics") if key not in fields]
    if missing:
        raise TaskError(f"task {name!r} is not a GLUE task, so make_task needs {', '.join(missing)}")
    if source == "files" and eval_splits is None:
        fields["eval_splits"] = tuple(split for split in files if split != train_split)
    task = Task(name=name, num_labels=int(fields["num_labels"]), metrics=tuple(fields["metrics"]),
                text_a=fields["text_a"], text_b=fields.get("text_b"), label=fields.get("label", "label"),
                label_names=tuple(fields.get("label_names", ())), train_split=train_split,
                eval_splits=tuple(fields.get("eval_splits", ("validation",))), source=source,
                tfds_name=f"glue/{name}" if source == "tfds" else None, data_dir=data_dir,
                files=tuple((files or {}).items()), delimiter=delimiter, header=header)
    unknown = [metric for metric in task.metrics if metric not in METRICS]
    if unknown:
        raise TaskError(f"unknown metric(s) {unknown} for task {name!r}; known: {', '.join(METRICS)}")
    if task.num_labels < 1:
        raise TaskError(f"num_labels={task.num_labels} for task {name!r}: use 1 for regression, >= 2 for classes")
    return task


@dataclasses.dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: float


def read_split(task: Task, split: str) -> list[Example]:
    """Every example of one split, labels as ids (classification) or floats (regression)."""
    examples = _read_tfds(task, split) if task.source == "tfds" else _read_files(task, split)
    if not examples:
        raise TaskError(f"split {split!r} of task {task.name!r} holds no examples")
    return examples


def _read_tfds(task: Task, split: str) -> list[Example]:
    import tensorflow_datasets as tfds

    builder = tfds.builder(task.tfds_name, data_dir=task.data_dir)
    try:
        dataset = builder.as_dataset(split=split)
    except AssertionError as error:  # what TFDS raises for a dataset that was never prepared
        raise TaskError(f"TFDS {task.tfds_name} is not prepared under {task.data_dir or 'the default data_dir'} "
                        f"({str(error).splitlines()[0][:200]}); nothing downloads here. Prepare it where there is "
                        f"network (`tfds build {task.tfds_name} --data_dir=DIR`), copy DIR here and set "
                        "make_task.data_dir, or read TSV files (make_task.source = 'files')") from None
    except (KeyError, ValueError) as error:
        raise TaskError(f"TFDS {task.tfds_name} has no split {split!r} ({error}); it has "
                        f"{', '.join(builder.info.splits) or 'no splits recorded'}") from None
    examples = []
    for row in tfds.as_numpy(dataset):
        text_b = None if task.text_b is None else _text(row[task.text_b])
        examples.append(Example(_text(row[task.text_a]), text_b, float(row[task.label])))
    if examples and all(example.label < 0 for example in examples):
        raise TaskError(f"split {split!r} of {task.tfds_name} has no labels (GLUE test splits are unlabeled); "
                        "evaluate on a validation split")
    return examples


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_files(task: Task, split: str) -> list[Example]:
    files = dict(task.files)
    if split not in files:
        raise TaskError(f"task {task.name!r} has no file for split {split!r}; make_task.files has "
                        f"{', '.join(files) or 'nothing'}")
    path = Path(files[split])
    if not path.is_file():
        raise TaskError(f"{path} (split {split!r} of task {task.name!r}) does not exist")
    delimiter = task.delimiter or ("\t" if path.suffix == ".tsv" else ",")
    # The original reads GLUE TSVs without quote handling: their texts contain unbalanced quotes.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter, quoting=quoting))
    names = rows.pop(0) if task.header and rows else []
    columns = {"text_a": task.text_a, "label": task.label}
    if task.text_b is not None:
        columns["text_b"] = task.text_b
    index = {field: _column_index(column, names, path, field) for field, column in columns.items()}
    examples = []
    for line, row in enumerate(rows, start=2 if task.header else 1):
        if not row:
            continue
        if max(index.values()) >= len(row):
            raise TaskError(f"{path}:{line} has {len(row)} fields, fewer than the columns the task reads "
                            f"({columns}); check make_task.delimiter")
        label = _label(task, row[index["label"]], f"{path}:{line}")
        text_b = row[index["text_b"]] if "text_b" in index else None
        examples.append(Example(row[index["text_a"]], text_b, label))
    return examples


def _column_index(column: Column, names: list[str], path: Path, field: str) -> int:
    if isinstance(column, int):
        return column
    if column not in names:
        where = f"its header has {names}" if names else "it has no header (make_task.header = False): use indices"
        raise TaskError(f"{path} has no column {column!r} for {field}; {where}")
    return names.index(column)


def _label(task: Task, value: str, where: str) -> float:
    value = value.strip()
    try:
        if task.is_regression:
            return float(value)
        if value in task.label_names:
            return float(task.label_names.index(value))
        label = int(value)
    except ValueError:
        raise TaskError(f"{where}: label {value!r} is not {'a number' if task.is_regression else 'an integer id'}"
                        f"{'' if task.is_regression else ' nor one of ' + str(list(task.label_names))}; set "
                        "make_task.label_names (in id order) or fix the label column") from None
    if not 0 <= label < task.num_labels:
        raise TaskError(f"{where}: label {label} is outside 0..{task.num_labels - 1} (num_labels={task.num_labels})")
    return float(label)


@dataclasses.dataclass
class Encoded:
    """Tokenized examples, unpadded: `tokens[i]` is [CLS] a [SEP] (b [SEP]); the first `first[i]` have segment 0."""

    tokens: list[np.ndarray]
    first: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def encode(examples: Sequence[Example], tokenizer: Tokenizer, max_seq_length: int) -> Encoded:
    """Tokenizes and truncates (longer text first, from its end) to at most `max_seq_length` tokens."""
    texts_a = tokenizer.encode_batch([example.text_a for example in examples])
    pairs = any(example.text_b is not None for example in examples)
    texts_b = tokenizer.encode_batch([example.text_b or "" for example in examples]) if pairs else None
    tokens, first = [], []
    for index, ids_a in enumerate(texts_a):
        ids_a = list(ids_a)
        ids_b = list(texts_b[index]) if texts_b is not None and examples[index].text_b is not None else None
        if ids_b is None:
            ids_a = ids_a[: max_seq_length - 2]
            sequence = [CLS_ID, *ids_a, SEP_ID]
        else:
            while len(ids_a) + len(ids_b) > max_seq_length - 3:
                (ids_a if len(ids_a) > len(ids_b) else ids_b).pop()
            sequence = [CLS_ID, *ids_a, SEP_ID, *ids_b, SEP_ID]
        tokens.append(np.asarray(sequence, np.int32))
        first.append(len(ids_a) + 2)
    labels = np.asarray([example.label for example in examples], np.float32)
    return Encoded(tokens, np.asarray(first, np.int32), labels)


def make_batch(encoded: Encoded, indices: Sequence[int], max_seq_length: int, batch_size: int) -> dict[str, np.ndarray]:
    """A padded batch of `batch_size` rows: the examples at `indices`, then rows of weight 0 if fewer."""
    ids = np.full((batch_size, max_seq_length), PAD_ID, np.int32)
    segments = np.zeros((batch_size, max_seq_length), np.int32)
    labels = np.zeros((batch_size,), np.float32)
    weights = np.zeros((batch_size,), np.float32)
    for row, index in enumerate(indices):
        tokens = encoded.tokens[index]
        ids[row, : len(tokens)] = tokens
        segments[row, encoded.first[index]: len(tokens)] = 1
        labels[row] = encoded.labels[index]
        weights[row] = 1.0
    return {"input_ids": ids, "input_mask": (ids != PAD_ID).astype(np.int32), "segment_ids": segments,
            "labels": labels, "example_weights": weights}


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Binary F1 of class 1 (the GLUE convention for MRPC and QQP); 0 when there is no true or predicted 1."""
    labels, predictions = np.asarray(labels) == 1, np.asarray(predictions) == 1
    true_positive = float(np.sum(labels & predictions))
    denominator = float(np.sum(labels) + np.sum(predictions))
    return 2.0 * true_positive / denominator if denominator else 0.0


def mcc(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation (multiclass form, from the confusion matrix); 0 when undefined."""
    classes = np.unique(np.concatenate([labels, predictions]))
    confusion = np.array([[np.sum((labels == t) & (predictions == p)) for p in classes] for t in classes],
                         np.float64)
    total, correct = confusion.sum(), np.trace(confusion)
    true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
    numerator = correct * total - true_counts @ predicted_counts
    denominator = np.sqrt((total ** 2 - predicted_counts @ predicted_counts) * (total ** 2 - true_counts @ true_counts))
    return float(numerator / denominator) if denominator else 0.0


def pearson(labels: np.ndarray, predictions: np.ndarray) -> float:
    x = np.asarray(labels, np.float64) - np.mean(labels)
    y = np.asarray(predictions, np.float64) - np.mean(predictions)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions (what Spearman's coefficient uses)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(labels: np.ndarray, predictions: np.ndarray) -> float:
    return pearson(average_ranks(labels), average_ranks(predictions))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def predictions_from_logits(task: Task, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification, the single output for regression."""
    logits = np.asarray(logits)
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def compute_metrics(task: Task, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The task's metrics over all examples of a split."""
    labels = np.asarray(labels) if task.is_regression else np.asarray(labels).astype(np.int64)
    return {name: METRICS[name](labels, np.asarray(predictions)) for name in task.metrics}
