"""RACE: the task definition (gin), readers (the official per-article JSON files or TFDS `race/*`), features.

An official RACE article is one JSON object `{"id", "article", "questions": [...], "options": [[4 texts], ...],
"answers": ["A".."D", ...]}`, stored one per file under `<split>/<level>/` (level `middle` or `high`); the
original run_race also reads `<split>/<level>/all.txt` with one such object per line. TFDS has `race/middle` and
`race/high` (splits train, dev, test).

Features follow the original race_utils: for each option the question and the option are joined (the option
replaces a "_" blank in the question, else question + " " + option), its pieces keep the last `max_qa_length`;
the article is cut from the end so that [CLS] article [SEP] question-option [SEP] fits `max_seq_length`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from albert_jax.downstream.tasks import TaskError
from albert_jax.input.tokenizer import CLS_ID, PAD_ID, SEP_ID, Tokenizer

LEVELS = ("middle", "high")
NUM_CHOICES = 4


@dataclasses.dataclass(frozen=True)
class RaceExample:
    example_id: str  # article id + question number
    level: str
    article: str
    question: str
    options: tuple[str, ...]
    label: int


@dataclasses.dataclass(frozen=True)
class RaceTask:
    name: str
    source: str
    data_dir: str | None
    files: tuple[tuple[str, str], ...]
    levels: tuple[str, ...]
    train_split: str
    eval_splits: tuple[str, ...]
    max_qa_length: int
    metrics: tuple[str, ...] = ("accuracy", "middle_accuracy", "high_accuracy")


@gin.configurable
def make_race_task(source: str = "tfds", data_dir: str | None = None, files: Mapping[str, str] | None = None,
                   levels: Sequence[str] = LEVELS, train_split: str = "train",
                   eval_splits: Sequence[str] | None = None, max_qa_length: int = 128) -> RaceTask:
    """The RACE task.

    Args:
      source: 'tfds' (TFDS race/<level> under data_dir) or 'files' (files: split -> a directory holding
        `middle/` and `high/` with one JSON article per file, or an all.txt of JSON lines per level).
      levels: which of middle / high to read (the original's --middle_only / --high_only).
      eval_splits: default 'dev' (TFDS) or every files split but the train split.
      max_qa_length: pieces kept of question + option (from the end; original 128).
    """
    if source not in ("tfds", "files"):
        raise TaskError(f"make_race_task.source={source!r} is not 'tfds' or 'files'")
    if source == "files" and not files:
        raise TaskError("make_race_task.source='files' needs make_race_task.files = {'train': DIR, 'dev': DIR}")
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        raise TaskError(f"make_race_task.levels={tuple(levels)} must be a non-empty subset of {LEVELS}")
    if eval_splits is None:
        eval_splits = tuple(s for s in files if s != train_split) if source == "files" else ("dev",)
    return RaceTask(name="race", source=source, data_dir=data_dir, files=tuple((files or {}).items()),
                    levels=tuple(levels), train_split=train_split, eval_splits=tuple(eval_splits),
                    max_qa_length=max_qa_length)


def read_split(task: RaceTask, split: str) -> list[RaceExample]:
    examples = []
    for level in task.levels:
        if task.source == "tfds":
            from albert_jax.downstream.tfds_reader import load_split

            records = [(f"TFDS race/{level} {split} record {i}", _decoded(row))
                       for i, row in enumerate(load_split(f"race/{level}", task.data_dir, split))]
        else:
            files = dict(task.files)
            if split not in files:
                raise TaskError(f"task race has no directory for split {split!r}; make_race_task.files has "
                                f"{', '.join(files) or 'nothing'}")
            records = _read_level(Path(files[split]), level)
        for where, record in records:
            examples += article_examples(record, level, where)
    if not examples:
        raise TaskError(f"split {split!r} of race ({', '.join(task.levels)}) holds no questions")
    return examples


def _decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    text = lambda value: value.decode("utf-8") if isinstance(value, bytes) else str(value)  # noqa: E731
    return {"id": text(row["example_id"]), "article": text(row["article"]),
            "questions": [text(q) for q in row["questions"]], "answers": [text(a) for a in row["answers"]],
            "options": [[text(o) for o in options] for options in row["options"]]}


def _read_level(root: Path, level: str) -> list[tuple[str, Any]]:
    directory = root / level
    if not directory.is_dir():
        raise TaskError(f"RACE directory {root} has no {level}/ folder (expected {root}/{{middle,high}}/*.txt); "
                        "set make_race_task.levels to read only the levels present")
    records = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".txt", ".json") and p.is_file()):
        lines = path.read_text(encoding="utf-8").splitlines() if path.name == "all.txt" else [path.read_text(
            encoding="utf-8")]
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}" if path.name == "all.txt" else str(path)
            try:
                records.append((where, json.loads(line)))
            except json.JSONDecodeError as error:
                raise TaskError(f"{where} is not a JSON RACE article ({error})") from None
    return records


def article_examples(record: Any, level: str, where: str) -> list[RaceExample]:
    """The questions of one article record; a malformed record stops with where it came from."""
    if not isinstance(record, dict) or any(key not in record for key in ("article", "questions", "options",
                                                                          "answers")):
        raise TaskError(f"{where}: not a RACE article (needs article, questions, options, answers)")
    questions, options, answers = record["questions"], record["options"], record["answers"]
    if not len(questions) == len(options) == len(answers):
        raise TaskError(f"{where}: {len(questions)} questions, {len(options)} option lists and {len(answers)} "
                        "answers; they must be equally many")
    examples = []
    for index, (question, choices, answer) in enumerate(zip(questions, options, answers)):
        if len(choices) != NUM_CHOICES or answer not in "ABCD" or len(answer) != 1:
            raise TaskError(f"{where}: question {index} needs {NUM_CHOICES} options and an answer A-D, has "
                            f"{len(choices)} options and answer {answer!r}")
        examples.append(RaceExample(f"{record.get('id', where)}-{index}", level, record["article"], question,
                                    tuple(choices), ord(answer) - ord("A")))
    return examples


def join_option(question: str, option: str) -> str:
    """The option in the question's "_" blank, else question + " " + option (the original's rule)."""
    return question.replace("_", option) if "_" in question else f"{question} {option}"


@dataclasses.dataclass
class RaceFeatures:
    input_ids: np.ndarray  # [N, C, S]
    segment_ids: np.ndarray  # [N, C, S]
    lengths: np.ndarray  # [N, C]
    labels: np.ndarray  # [N]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int], batch_size: int) -> dict[str, np.ndarray]:
        rows = np.asarray(indices, np.int64)
        pad = batch_size - len(rows)
        take = lambda array: np.concatenate([array[rows], np.zeros((pad,) + array.shape[1:], array.dtype)])  # noqa
        ids, lengths = take(self.input_ids), take(self.lengths)
        mask = (np.arange(ids.shape[-1]) < lengths[..., None]).astype(np.int32)
        return {"input_ids": ids, "input_mask": mask, "segment_ids": take(self.segment_ids),
                "labels": take(self.labels).astype(np.float32),
                "example_weights": np.r_[np.ones(len(rows), np.float32), np.zeros(pad, np.float32)]}


def convert(examples: Sequence[RaceExample], tokenizer: Tokenizer, max_seq_length: int,
            max_qa_length: int) -> RaceFeatures:
    if max_seq_length <= max_qa_length + 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the article after max_qa_length="
                         f"{max_qa_length} pieces and [CLS] [SEP] [SEP]")
    count = len(examples)
    ids = np.full((count, NUM_CHOICES, max_seq_length), PAD_ID, np.int32)
    segments = np.zeros_like(ids)
    lengths = np.zeros((count, NUM_CHOICES), np.int32)
    articles: dict[str, list[int]] = {}
    for row, example in enumerate(examples):
        if example.article not in articles:
            articles[example.article] = tokenizer.encode(example.article)
        endings = tokenizer.encode_batch([join_option(example.question, option) for option in example.options])
        for choice, ending in enumerate(endings):
            ending = ending[-max_qa_length:]
            article = articles[example.article][: max_seq_length - 3 - len(ending)]
            tokens = [CLS_ID, *article, SEP_ID, *ending, SEP_ID]
            ids[row, choice, :len(tokens)] = tokens
            segments[row, choice, len(article) + 2:len(tokens)] = 1
            lengths[row, choice] = len(tokens)
    return RaceFeatures(ids, segments, lengths, np.asarray([e.label for e in examples], np.int32))
