"""SQuAD v1.1 / v2.0: the task definition (gin) and the readers (official JSON files or TFDS `squad/*`).

The official format is `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible", "plausible_answers"}]}]}]}`; `is_impossible` and
`plausible_answers` exist in v2.0 only. TFDS `squad/v1.1` and `squad/v2.0` hold one record per question with the
same fields (splits train and validation). Both readers give `SquadExample`s, one per question, with all gold
answers: training uses the first, evaluation scores against all of them (`qa_metrics`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import gin

from albert_jax.downstream.tasks import TaskError

VERSIONS = ("v1.1", "v2.0")
HEADS = ("span", "original_v2")


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question on one paragraph; `answers` are (text, character offset in `context`) pairs."""

    qas_id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    is_impossible: bool = False


@dataclasses.dataclass(frozen=True)
class SquadTask:
    """Where the questions come from and how answers are predicted (see `make_squad_task`)."""

    name: str
    version: str
    head: str
    source: str
    data_dir: str | None
    files: tuple[tuple[str, str], ...]
    train_split: str
    eval_splits: tuple[str, ...]
    doc_stride: int
    max_query_length: int
    n_best_size: int
    max_answer_length: int
    null_score_diff_threshold: float | None
    start_n_top: int
    end_n_top: int

    @property
    def version_2(self) -> bool:
        return self.version == "v2.0"

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("f1", "exact", "best_f1", "best_exact") if self.version_2 else ("f1", "exact_match")

    @property
    def tfds_name(self) -> str:
        return f"squad/{self.version}"


@gin.configurable
def make_squad_task(version: str = gin.REQUIRED, head: str = "span", source: str = "tfds",
                    data_dir: str | None = None, files: Mapping[str, str] | None = None,
                    train_split: str = "train", eval_splits: tuple[str, ...] | None = None, doc_stride: int = 128,
                    max_query_length: int = 64, n_best_size: int = 20, max_answer_length: int = 30,
                    null_score_diff_threshold: float | None = None, start_n_top: int = 5,
                    end_n_top: int = 5) -> SquadTask:
    """The SQuAD task to fine-tune on.

    Args:
      version: 'v1.1' or 'v2.0' (unanswerable questions, null-score threshold, HasAns/NoAns metrics).
      head: 'span' (start/end logits, transformers' AlbertForQuestionAnswering; v2.0 null score = start + end
        logit at [CLS]) or 'original_v2' (the original run_squad_v2 head with an answerability classifier).
      source: 'tfds' (TFDS squad/<version> under data_dir, prepared beforehand) or 'files' (files: split -> the
        official JSON file).
      eval_splits: default TFDS 'validation', or every files split but the train split.
      doc_stride, max_query_length: windows over long paragraphs, question pieces kept (original 128, 64).
      n_best_size, max_answer_length: answers considered per question, longest answer in pieces (20, 30).
      null_score_diff_threshold: v2.0: predict "no answer" when the null odds exceed it; None takes the threshold
        that maximizes F1 on the evaluated split (what the original run_squad_v2 reports).
      start_n_top, end_n_top: 'original_v2' beam over starts and ends per start (5, 5).
    """
    if version not in VERSIONS:
        raise TaskError(f"make_squad_task.version={version!r} is not one of {VERSIONS}")
    if head not in HEADS:
        raise TaskError(f"make_squad_task.head={head!r} is not one of {HEADS}")
    if head == "original_v2" and version != "v2.0":
        raise TaskError("make_squad_task.head='original_v2' is the SQuAD v2.0 head; use head='span' for v1.1")
    if source not in ("tfds", "files"):
        raise TaskError(f"make_squad_task.source={source!r} is not 'tfds' or 'files'")
    if source == "files" and not files:
        raise TaskError("make_squad_task.source='files' needs make_squad_task.files = {'train': PATH, 'dev': PATH}")
    if eval_splits is None:
        eval_splits = (tuple(split for split in files if split != train_split) if source == "files"
                       else ("validation",))
    return SquadTask(name=f"squad_{version}", version=version, head=head, source=source, data_dir=data_dir,
                     files=tuple((files or {}).items()), train_split=train_split, eval_splits=tuple(eval_splits),
                     doc_stride=doc_stride, max_query_length=max_query_length, n_best_size=n_best_size,
                     max_answer_length=max_answer_length, null_score_diff_threshold=null_score_diff_threshold,
                     start_n_top=start_n_top, end_n_top=end_n_top)


def read_split(task: SquadTask, split: str) -> list[SquadExample]:
    """Every question of one split."""
    if task.source == "tfds":
        examples = _read_tfds(task, split)
    else:
        files = dict(task.files)
        if split not in files:
            raise TaskError(f"task {task.name} has no file for split {split!r}; make_squad_task.files has "
                            f"{', '.join(files) or 'nothing'}")
        examples = read_json(files[split])
    if not examples:
        raise TaskError(f"split {split!r} of {task.name} holds no questions")
    return examples


def read_json(path: str | Path) -> list[SquadExample]:
    """The questions of an official SQuAD JSON file; a malformed record stops with the file and the record."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"SQuAD file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TaskError(f"{path} is not JSON ({error})") from None
    except (KeyError, TypeError):
        raise TaskError(f"{path} has no top-level 'data' list: not a SQuAD file") from None
    examples = []
    for article_index, article in enumerate(data):
        for paragraph_index, paragraph in enumerate(_field(article, "paragraphs", path, f"data[{article_index}]")):
            where = f"data[{article_index}].paragraphs[{paragraph_index}]"
            context = _field(paragraph, "context", path, where)
            for qa_index, qa in enumerate(_field(paragraph, "qas", path, where)):
                examples.append(_example(qa, context, path, f"{where}.qas[{qa_index}]"))
    return examples


def _field(record: Any, name: str, path: Path, where: str) -> Any:
    if not isinstance(record, dict) or name not in record:
        raise TaskError(f"{path}: record {where} has no field {name!r}; expected the official SQuAD layout")
    return record[name]


def _example(qa: Any, context: str, path: Path, where: str) -> SquadExample:
    qas_id = str(_field(qa, "id", path, where))
    where = f"{where} (id {qas_id})"
    question = _field(qa, "question", path, where)
    impossible = bool(qa.get("is_impossible", False))
    answers = []
    for answer in _field(qa, "answers", path, where):
        text, start = _field(answer, "text", path, where), _field(answer, "answer_start", path, where)
        if not isinstance(start, int) or not 0 <= start <= len(context) - len(text):
            raise TaskError(f"{path}: record {where} has answer_start {start!r} outside its context of "
                            f"{len(context)} characters for answer {text!r}")
        answers.append((text, start))
    if not answers and not impossible:
        raise TaskError(f"{path}: record {where} has no answers and is not marked is_impossible")
    if not isinstance(context, str) or not isinstance(question, str):
        raise TaskError(f"{path}: record {where} has a non-text context or question")
    return SquadExample(qas_id, question, context, tuple(answers), impossible)


def _read_tfds(task: SquadTask, split: str) -> list[SquadExample]:
    from albert_jax.downstream.tfds_reader import load_split

    examples = []
    for index, row in enumerate(load_split(task.tfds_name, task.data_dir, split)):
        text = lambda value: value.decode("utf-8") if isinstance(value, bytes) else str(value)  # noqa: E731
        context = text(row["context"])
        answers = tuple((text(t), int(s)) for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"]))
        impossible = bool(row.get("is_impossible", False))
        if not answers and not impossible:
            raise TaskError(f"TFDS {task.tfds_name} split {split} record {index} has no answers")
        examples.append(SquadExample(text(row["id"]), text(row["question"]), context, answers, impossible))
    return examples


def gold_answers(examples: list[SquadExample]) -> dict[str, list[str]]:
    """Question id -> gold answer texts (empty for unanswerable questions), what `qa_metrics` scores against."""
    return {example.qas_id: [text for text, _ in example.answers] if not example.is_impossible else []
            for example in examples}
