"""Task families the fine-tuning job runs: what model, loss, features, predictions and metrics each task needs.

    'classification'  GLUE and other sentence(-pair) tasks (`tasks.make_task`), `AlbertClassifier`
    'squad'           SQuAD v1.1 / v2.0 (`squad.make_squad_task`), span head or the original v2.0 head
    'race'            RACE (`race.make_race_task`), `AlbertForMultipleChoice`

A family turns the task into: the Flax model and its init; the training loss; the predict function (a dict of
arrays per batch); the features of a split (`len` and `batch(indices, batch_size)`, rows of weight 0 pad the
last batch); and `score`, which turns all predictions of a split into its metrics on the host (and, given a
directory, writes the official prediction files there: SQuAD predictions.json, nbest_predictions.json and
null_odds.json for v2.0; RACE predictions.json, question id -> option letter). The first of `metrics` on the
first of `eval_splits` selects the best evaluation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.config import AlbertConfig
from albert_jax.downstream import qa_features, qa_metrics, race, squad, tasks
from albert_jax.heads import AlbertClassifier, AlbertForMultipleChoice, AlbertForQuestionAnswering, AlbertForSquadV2
from albert_jax.input.tokenizer import Tokenizer
from albert_jax.losses import LossFn, classification_loss, span_loss, squad_v2_loss

Array = jax.Array
FAMILIES = ("classification", "squad", "race")


def _write_json(directory: Path | None, name: str, value: Any) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(json.dumps(value, indent=2) + "\n")


@dataclasses.dataclass
class ClassifiedExamples:
    """`tasks.Encoded` with the batch interface."""

    encoded: tasks.Encoded
    seq_length: int

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, indices: Any, batch_size: int) -> dict[str, np.ndarray]:
        return tasks.make_batch(self.encoded, indices, self.seq_length, batch_size)


class Classification:
    """GLUE-style classification / regression on the pooled output."""

    def __init__(self, task: tasks.Task) -> None:
        self.task, self.name = task, task.name
        self.eval_splits, self.metrics, self.train_split = task.eval_splits, task.metrics, task.train_split

    def model(self, config: AlbertConfig, dropout: float) -> nn.Module:
        return AlbertClassifier(config, self.task.num_labels, dropout)

    def init_fn(self, model: nn.Module, seq_length: int) -> Callable[[Array], Any]:
        ids = jnp.zeros((1, seq_length), jnp.int32)
        return lambda rng: model.init(rng, ids, ids, ids, deterministic=True)["params"]

    def loss_fn(self, model: nn.Module) -> LossFn:
        regression = self.task.is_regression

        def loss_fn(params: Any, batch: dict[str, Array], rng: Array, totals: dict[str, Array]) -> tuple[Array, dict]:
            del totals  # task losses are whole-batch means: fine-tuning takes no microbatches
            logits = model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                 deterministic=False, rngs={"dropout": rng})
            loss, metrics = classification_loss(logits, batch, regression)
            return loss, dict(metrics, loss=loss)

        return loss_fn

    def predict_fn(self, model: nn.Module) -> Callable[[Any, dict[str, Array]], dict[str, Array]]:
        return lambda params, batch: {"logits": model.apply(
            {"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"], deterministic=True)}

    def features(self, split: str, tokenizer: Tokenizer, seq_length: int) -> ClassifiedExamples:
        return ClassifiedExamples(tasks.encode(tasks.read_split(self.task, split), tokenizer, seq_length), seq_length)

    def score(self, split: str, data: ClassifiedExamples, outputs: dict[str, np.ndarray],
              directory: Path | None) -> dict[str, float]:
        predictions = tasks.predictions_from_logits(self.task, outputs["logits"])
        return dict(tasks.compute_metrics(self.task, data.encoded.labels, predictions), examples=len(data))


@dataclasses.dataclass
class SquadSplit:
    examples: list[squad.SquadExample]
    features: qa_features.QaFeatures

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices: Any, batch_size: int) -> dict[str, np.ndarray]:
        return self.features.batch(indices, batch_size)


class Squad:
    """SQuAD v1.1 / v2.0 with the span head or the original v2.0 head."""

    def __init__(self, task: squad.SquadTask) -> None:
        self.task, self.name = task, task.name
        self.eval_splits, self.metrics, self.train_split = task.eval_splits, task.metrics, task.train_split

    def model(self, config: AlbertConfig, dropout: float) -> nn.Module:
        if self.task.head == "original_v2":
            return AlbertForSquadV2(config, self.task.start_n_top, self.task.end_n_top, dropout)
        return AlbertForQuestionAnswering(config)

    def _inputs(self, batch: dict[str, Array]) -> tuple[Array, ...]:
        return batch["input_ids"], batch["input_mask"], batch["segment_ids"]

    def init_fn(self, model: nn.Module, seq_length: int) -> Callable[[Array], Any]:
        ids = jnp.zeros((1, seq_length), jnp.int32)
        extra = (ids, ids[:, 0]) if self.task.head == "original_v2" else ()
        return lambda rng: model.init(rng, ids, ids, ids, *extra, deterministic=True)["params"]

    def loss_fn(self, model: nn.Module) -> LossFn:
        original = self.task.head == "original_v2"

        def loss_fn(params: Any, batch: dict[str, Array], rng: Array, totals: dict[str, Array]) -> tuple[Array, dict]:
            del totals
            variables, rngs = {"params": params}, {"dropout": rng}
            if original:
                outputs = model.apply(variables, *self._inputs(batch), batch["p_mask"], batch["start_positions"],
                                      deterministic=False, rngs=rngs)
                loss, metrics = squad_v2_loss(outputs, batch)
            else:
                start, end = model.apply(variables, *self._inputs(batch), deterministic=False, rngs=rngs)
                loss, metrics = span_loss(start, end, batch)
            return loss, dict(metrics, loss=loss)

        return loss_fn

    def predict_fn(self, model: nn.Module) -> Callable[[Any, dict[str, Array]], dict[str, Array]]:
        if self.task.head == "original_v2":
            return lambda params, batch: model.apply({"params": params}, *self._inputs(batch), batch["p_mask"],
                                                     deterministic=True)

        def predict(params: Any, batch: dict[str, Array]) -> dict[str, Array]:
            start, end = model.apply({"params": params}, *self._inputs(batch), deterministic=True)
            return {"start_logits": start, "end_logits": end}

        return predict

    def features(self, split: str, tokenizer: Tokenizer, seq_length: int) -> SquadSplit:
        examples = squad.read_split(self.task, split)
        return SquadSplit(examples, qa_features.convert(examples, tokenizer, seq_length, self.task.doc_stride,
                                                        self.task.max_query_length))

    def score(self, split: str, data: SquadSplit, outputs: dict[str, np.ndarray],
              directory: Path | None) -> dict[str, float]:
        task = self.task
        golds = squad.gold_answers(data.examples)
        answers = qa_features.extract_answers(data.examples, data.features, outputs, task.n_best_size,
                                              task.max_answer_length, task.version_2, task.null_score_diff_threshold)
        if not task.version_2:
            result = qa_metrics.squad_v1(golds, answers.predictions)
        else:
            result = qa_metrics.squad_v2(golds, answers.best_answers, answers.null_odds, answers.best_answers)
            threshold = task.null_score_diff_threshold
            if threshold is None:  # the original: the F1-best threshold found on this split
                threshold = result["best_f1_thresh"]
                answers.predictions = {qid: "" if answers.null_odds[qid] > threshold else text
                                       for qid, text in answers.best_answers.items()}
            sweep = {key: result[key] for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")}
            result = dict(qa_metrics.squad_v2(golds, answers.predictions), **sweep,
                          null_score_diff_threshold=float(threshold))
            _write_json(directory, "null_odds.json", answers.null_odds)
        _write_json(directory, "predictions.json", answers.predictions)
        _write_json(directory, "nbest_predictions.json", answers.nbest)
        return dict(result, questions=len(data.examples), windows=len(data.features))


@dataclasses.dataclass
class RaceSplit:
    examples: list[race.RaceExample]
    features: race.RaceFeatures

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices: Any, batch_size: int) -> dict[str, np.ndarray]:
        return self.features.batch(indices, batch_size)


class Race(Classification):
    """RACE: four (article, question + option) sequences per question, one logit each."""

    def __init__(self, task: race.RaceTask) -> None:
        self.task, self.name = task, task.name
        self.eval_splits, self.train_split = task.eval_splits, task.train_split
        self.metrics = tuple(m for m in task.metrics if m == "accuracy" or m.split("_")[0] in task.levels)

    def model(self, config: AlbertConfig, dropout: float) -> nn.Module:
        return AlbertForMultipleChoice(config, dropout)

    def init_fn(self, model: nn.Module, seq_length: int) -> Callable[[Array], Any]:
        ids = jnp.zeros((1, race.NUM_CHOICES, seq_length), jnp.int32)
        return lambda rng: model.init(rng, ids, ids, ids, deterministic=True)["params"]

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params: Any, batch: dict[str, Array], rng: Array, totals: dict[str, Array]) -> tuple[Array, dict]:
            del totals
            logits = model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                 deterministic=False, rngs={"dropout": rng})
            loss, metrics = classification_loss(logits, batch, regression=False)
            return loss, dict(metrics, loss=loss)

        return loss_fn

    def features(self, split: str, tokenizer: Tokenizer, seq_length: int) -> RaceSplit:
        examples = race.read_split(self.task, split)
        return RaceSplit(examples, race.convert(examples, tokenizer, seq_length, self.task.max_qa_length))

    def score(self, split: str, data: RaceSplit, outputs: dict[str, np.ndarray],
              directory: Path | None) -> dict[str, float]:
        predicted = np.asarray(outputs["logits"]).argmax(-1)
        _write_json(directory, "predictions.json", {example.example_id: "ABCD"[int(choice)]
                                                    for example, choice in zip(data.examples, predicted)})
        return qa_metrics.race_accuracy([e.label for e in data.examples], [int(p) for p in predicted],
                                        [e.level for e in data.examples])


def make_family(name: str) -> Classification | Squad | Race:
    """The family `name` with its task from gin (`make_task`, `make_squad_task` or `make_race_task`)."""
    if name == "classification":
        return Classification(tasks.make_task())
    if name == "squad":
        return Squad(squad.make_squad_task())
    if name == "race":
        return Race(race.make_race_task())
    raise tasks.TaskError(f"finetune.family={name!r} is not one of {FAMILIES}")
