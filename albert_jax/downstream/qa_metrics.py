"""The official SQuAD v1.1 / v2.0 and RACE metrics, written here from their definitions.

SQuAD answers are compared after the official normalization: lowercase, drop every ASCII punctuation character
(`string.punctuation`), drop the articles a / an / the as whole words, collapse whitespace. Exact match is 1
when the normalized strings are equal; token F1 is the harmonic mean of precision and recall of the bag of
normalized whitespace tokens. Each question scores the maximum over its gold answers, and a split's score is
the mean over all its questions times 100 (a question without prediction scores 0).

v1.1 and v2.0 differ in two rules: v2.0 drops gold answers that normalize to the empty string and, for a
question without any gold answer, takes the empty string as the only gold answer; and v2.0 F1 is 1 when both
token lists are empty and 0 when exactly one is (v1.1: F1 is 0 whenever no token is shared). v2.0 also reports
HasAns_* / NoAns_* over the answerable / unanswerable questions and, given a no-answer score per question,
the best exact / F1 over all thresholds ("predict no answer when the score exceeds t") with that t.

RACE accuracy is the share of questions whose predicted option is the gold one, per level (middle, high) and
over all questions.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official answer normalization (lowercase, punctuation, articles, whitespace), in that order."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Token F1 of the normalized answers; `version_2` applies the v2.0 rule for empty answers."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and (not predicted or not expected):
        return float(predicted == expected)
    shared = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_v1(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """SQuAD v1.1: {'exact_match', 'f1'} in percent over every question of `golds` (id -> gold answer texts)."""
    if not golds:
        raise ValueError("no questions to score")
    exact = f1 = 0.0
    for qid, answers in golds.items():
        if qid in predictions:
            exact += max(exact_match(predictions[qid], gold) for gold in answers)
            f1 += max(token_f1(predictions[qid], gold) for gold in answers)
    return {"exact_match": 100.0 * exact / len(golds), "f1": 100.0 * f1 / len(golds)}


def _v2_raw_scores(golds: Mapping[str, Sequence[str]],
                   predictions: Mapping[str, str]) -> tuple[dict[str, float], dict[str, float]]:
    exact, f1 = {}, {}
    for qid, answers in golds.items():
        answers = [gold for gold in answers if normalize_answer(gold)] or [""]
        prediction = predictions.get(qid)
        if prediction is None:
            exact[qid] = f1[qid] = 0.0
            continue
        exact[qid] = max(exact_match(prediction, gold) for gold in answers)
        f1[qid] = max(token_f1(prediction, gold, version_2=True) for gold in answers)
    return exact, f1


def _mean(scores: Mapping[str, float], ids: Iterable[str]) -> tuple[float, int]:
    ids = list(ids)
    return (100.0 * sum(scores[qid] for qid in ids) / len(ids) if ids else 0.0), len(ids)


def best_threshold(scores: Mapping[str, float], no_answer_scores: Mapping[str, float],
                   has_answer: Mapping[str, bool], predictions: Mapping[str, str]) -> tuple[float, float]:
    """(best score in percent, its threshold) over "answer `predictions[q]` when no_answer_scores[q] <= t, else
    predict no answer": starting from t below every score (all no-answer), questions switch to their
    prediction in increasing order of their no-answer score; ties keep the first threshold reaching the best."""
    current = best = float(sum(1 for qid in scores if not has_answer[qid]))
    threshold = 0.0
    for qid in sorted(no_answer_scores, key=lambda q: no_answer_scores[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions.get(qid):
            current -= 1.0
        if current > best:
            best, threshold = current, no_answer_scores[qid]
    return 100.0 * best / len(scores), threshold


def squad_v2(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
             no_answer_scores: Mapping[str, float] | None = None,
             answer_predictions: Mapping[str, str] | None = None) -> dict[str, float]:
    """SQuAD v2.0: exact / f1 / total overall and for HasAns / NoAns questions, of `predictions` as given (the
    empty string predicts "no answer"). With `no_answer_scores` (null odds, larger = more likely unanswerable)
    also best_exact / best_f1 and their thresholds, sweeping over `answer_predictions` (the best non-empty
    answer of each question; default `predictions`)."""
    if not golds:
        raise ValueError("no questions to score")
    has_answer = {qid: any(normalize_answer(gold) for gold in answers) for qid, answers in golds.items()}
    exact, f1 = _v2_raw_scores(golds, predictions)
    result: dict[str, float] = {}
    for prefix, ids in (("", list(golds)), ("HasAns_", [q for q in golds if has_answer[q]]),
                        ("NoAns_", [q for q in golds if not has_answer[q]])):
        if prefix and not ids:
            continue
        result[prefix + "exact"], total = _mean(exact, ids)
        result[prefix + "f1"], _ = _mean(f1, ids)
        result[prefix + "total"] = float(total)
    if no_answer_scores is not None:
        answers = answer_predictions if answer_predictions is not None else predictions
        raw_exact, raw_f1 = _v2_raw_scores(golds, answers)
        result["best_exact"], result["best_exact_thresh"] = best_threshold(raw_exact, no_answer_scores,
                                                                           has_answer, answers)
        result["best_f1"], result["best_f1_thresh"] = best_threshold(raw_f1, no_answer_scores, has_answer, answers)
    return result


def race_accuracy(labels: Sequence[int], predictions: Sequence[int], levels: Sequence[str]) -> dict[str, float]:
    """Accuracy in [0, 1] over all questions ('accuracy') and per level ('middle_accuracy', 'high_accuracy', ...,
    for the levels present), with the question counts."""
    if not labels:
        raise ValueError("no questions to score")
    result: dict[str, float] = {}
    for level in sorted(set(levels)):
        picked = [int(p == y) for p, y, lv in zip(predictions, labels, levels) if lv == level]
        result[f"{level}_accuracy"] = sum(picked) / len(picked)
        result[f"{level}_questions"] = float(len(picked))
    result["accuracy"] = sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)
    result["questions"] = float(len(labels))
    return result
