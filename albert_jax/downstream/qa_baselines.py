"""Trivial answers to a SQuAD-format set, scored with the official metrics: the floor a fine-tuned reader has
to clear before it can be said to read.

first word: the paragraph's first whitespace word; first sentence: the paragraph up to its first sentence end
(., ! or ? followed by whitespace); random word: a word of the paragraph drawn with a seeded generator; no
answer (v2.0 sets only): the empty prediction for every question. A v2.0 set (any unanswerable question) is
scored with the v2.0 metrics, otherwise with v1.1's. RACE: the same option letter for every question, the
letter most frequent among the gold answers (the best any constant choice does) and chance.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from albert_jax.downstream import qa_metrics
from albert_jax.downstream.race import RaceExample
from albert_jax.downstream.squad import SquadExample, gold_answers

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def squad_baselines(examples: Sequence[SquadExample], seed: int = 0) -> dict[str, dict[str, float]]:
    """baseline name -> its official metrics ({'exact_match', 'f1'} for v1.1, `squad_v2`'s for v2.0)."""
    if not examples:
        raise ValueError("no questions to score")
    rng = random.Random(seed)
    version_2 = any(example.is_impossible for example in examples)
    predictions: dict[str, dict[str, str]] = {"first word": {}, "first sentence": {}, "random word": {}}
    for example in examples:
        words = example.context.split() or [""]
        predictions["first word"][example.qas_id] = words[0]
        predictions["first sentence"][example.qas_id] = _SENTENCE_END.split(example.context.strip(), 1)[0]
        predictions["random word"][example.qas_id] = rng.choice(words)
    if version_2:
        predictions["no answer"] = {example.qas_id: "" for example in examples}
    golds = gold_answers(list(examples))
    score = qa_metrics.squad_v2 if version_2 else qa_metrics.squad_v1
    return {name: score(golds, answers) for name, answers in predictions.items()}


def race_baselines(examples: Sequence[RaceExample]) -> dict[str, dict[str, float]]:
    """'chance' (1 / options, averaged over the questions) and 'always X' for the most frequent gold letter X
    (`race_accuracy`'s accuracies), in percent like the SQuAD scores."""
    if not examples:
        raise ValueError("no questions to score")
    labels = [example.label for example in examples]
    letter = max(sorted(set(labels)), key=labels.count)
    accuracies = qa_metrics.race_accuracy(labels, [letter] * len(labels), [example.level for example in examples])
    constant = {key: 100.0 * value for key, value in accuracies.items() if key.endswith("accuracy")}
    chance = 100.0 * sum(1 / len(example.options) for example in examples) / len(examples)
    return {"chance": {"accuracy": chance}, f"always {'ABCDEFGH'[letter]}": constant}
