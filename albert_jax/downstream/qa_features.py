"""SQuAD features and answer extraction, following the original run_squad_v1/v2 rules.

Features. The question is cut to `max_query_length` pieces; the paragraph is encoded once with each piece's
character span in the original text (`Tokenizer.encode_with_offsets`), so an answer's characters map to pieces
and any predicted piece span maps back to the exact substring of the context. Long paragraphs are cut into
windows of at most `max_seq_length - len(question) - 3` pieces, each starting `doc_stride` pieces after the
previous one (the last window ends at the paragraph's end). A window is [CLS] question [SEP] window [SEP]
(segment 0 through the first [SEP], 1 after); `p_mask` is 1 where no answer can start or end (question, [SEP],
padding) and 0 at [CLS] and the paragraph. A piece counts for the window where it has the most context (the
larger minimum of its left and right context, + 0.01 * window length). Training targets: the gold answer's
first and last piece; unanswerable questions, and windows that do not contain the whole answer, point both at
[CLS] (position 0) and are marked impossible.

Answers. Every window proposes spans: the `n_best_size` best starts times the `n_best_size` best ends (span
head) or the start/end beam of the original v2.0 head, kept if both ends lie in the window's paragraph, the
start piece has its maximum context there, end >= start and the span has at most `max_answer_length` pieces.
The spans of all windows of a question are joined, ranked by start + end score, de-duplicated by text and cut
to `n_best_size`; the best is the answer. For v2.0 the null odds are: span head, the smallest [CLS] score
(start + end logit at 0) over the windows minus the best span's score; original head, the smallest
answerability logit over the windows. "No answer" is predicted when the null odds exceed the threshold.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from albert_jax.downstream.squad import SquadExample
from albert_jax.input.tokenizer import CLS_ID, PAD_ID, SEP_ID, Tokenizer


@dataclasses.dataclass
class QaFeatures:
    """Windows of all questions of a split; the arrays have one row per window."""

    input_ids: np.ndarray  # [N, S] int32
    segment_ids: np.ndarray  # [N, S] int32
    lengths: np.ndarray  # [N] real tokens per window
    p_mask: np.ndarray  # [N, S] int32, 1 = cannot be part of an answer
    start_positions: np.ndarray  # [N] int32 (0 = [CLS] for unanswerable windows)
    end_positions: np.ndarray  # [N]
    is_impossible: np.ndarray  # [N] int32
    example_index: np.ndarray  # [N] the question each window belongs to
    doc_offset: np.ndarray  # [N] position of the window's first paragraph piece
    char_spans: list[np.ndarray]  # per window [pieces, 2]: first and last context character of each piece
    max_context: list[np.ndarray]  # per window [pieces] bool

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: Sequence[int], batch_size: int) -> dict[str, np.ndarray]:
        """`batch_size` rows: the windows at `indices`, then rows of weight 0 (all padding)."""
        rows = np.asarray(indices, np.int64)
        pad = batch_size - len(rows)
        take = lambda array, fill=0: np.concatenate(  # noqa: E731
            [array[rows], np.full((pad,) + array.shape[1:], fill, array.dtype)])
        ids = take(self.input_ids, PAD_ID)
        lengths = take(self.lengths)
        mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int32)
        return {"input_ids": ids, "input_mask": mask, "segment_ids": take(self.segment_ids),
                "p_mask": take(self.p_mask, 1), "start_positions": take(self.start_positions),
                "end_positions": take(self.end_positions), "is_impossible": take(self.is_impossible),
                "example_weights": np.r_[np.ones(len(rows), np.float32), np.zeros(pad, np.float32)]}


def answer_pieces(spans: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """(first, last) piece covering the characters start_char..end_char (inclusive) of the paragraph."""
    first = int(np.searchsorted(spans[:, 1], start_char, side="left"))
    last = int(np.searchsorted(spans[:, 0], end_char, side="right")) - 1
    first = min(first, len(spans) - 1)
    return first, max(first, last)


def windows(num_pieces: int, max_pieces: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the windows over a paragraph of `num_pieces` pieces (the original's sliding rule)."""
    spans, start = [], 0
    while True:
        length = min(num_pieces - start, max_pieces)
        spans.append((start, length))
        if start + length >= num_pieces:
            return spans
        start += min(length, doc_stride)


def _max_context(spans: list[tuple[int, int]], index: int) -> np.ndarray:
    """Whether each piece of window `index` has its maximum context in that window."""
    start, length = spans[index]
    best = np.full(length, -1.0)
    owner = np.full(length, -1)
    for other, (other_start, other_length) in enumerate(spans):
        positions = np.arange(start, start + length)
        inside = (positions >= other_start) & (positions < other_start + other_length)
        score = np.minimum(positions - other_start, other_start + other_length - 1 - positions) + 0.01 * other_length
        better = inside & (score > best)
        best[better], owner[better] = score[better], other
    return owner == index


def convert(examples: Sequence[SquadExample], tokenizer: Tokenizer, max_seq_length: int, doc_stride: int,
            max_query_length: int) -> QaFeatures:
    """The windows of every question (module doc)."""
    if max_seq_length <= max_query_length + 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the paragraph after a question of "
                         f"max_query_length={max_query_length} pieces and [CLS] [SEP] [SEP]")
    rows: dict[str, list] = {key: [] for key in ("ids", "segments", "p_mask", "start", "end", "impossible",
                                                  "example", "offset", "spans", "context")}
    paragraphs: dict[str, tuple[list[int], np.ndarray]] = {}
    for example_index, example in enumerate(examples):
        query = tokenizer.encode(example.question)[:max_query_length]
        if example.context not in paragraphs:
            ids, spans = tokenizer.encode_with_offsets(example.context)
            paragraphs[example.context] = (ids, np.asarray(spans, np.int64).reshape(-1, 2))
        doc_ids, doc_spans = paragraphs[example.context]
        if example.answers and not example.is_impossible:
            text, start_char = example.answers[0]
            answer = answer_pieces(doc_spans, start_char, start_char + max(len(text), 1) - 1)
        else:
            answer = None
        offset = len(query) + 2
        cuts = windows(len(doc_ids), max_seq_length - len(query) - 3, doc_stride) if doc_ids else [(0, 0)]
        for window_index, (start, length) in enumerate(cuts):
            tokens = [CLS_ID, *query, SEP_ID, *doc_ids[start:start + length], SEP_ID]
            p_mask = [0] + [1] * (len(query) + 1) + [0] * length + [1]
            if answer is not None and start <= answer[0] and answer[1] < start + length:
                positions, impossible = (answer[0] - start + offset, answer[1] - start + offset), 0
            else:
                positions, impossible = (0, 0), 1
            rows["ids"].append(tokens)
            rows["segments"].append([0] * offset + [1] * (length + 1))
            rows["p_mask"].append(p_mask)
            rows["start"].append(positions[0])
            rows["end"].append(positions[1])
            rows["impossible"].append(impossible)
            rows["example"].append(example_index)
            rows["offset"].append(offset)
            rows["spans"].append(doc_spans[start:start + length])
            rows["context"].append(_max_context(cuts, window_index) if length else np.zeros(0, bool))

    def padded(key: str, fill: int) -> np.ndarray:
        out = np.full((len(rows[key]), max_seq_length), fill, np.int32)
        for row, values in enumerate(rows[key]):
            out[row, :len(values)] = values
        return out

    return QaFeatures(
        input_ids=padded("ids", PAD_ID), segment_ids=padded("segments", 0),
        lengths=np.asarray([len(t) for t in rows["ids"]], np.int32), p_mask=padded("p_mask", 1),
        start_positions=np.asarray(rows["start"], np.int32), end_positions=np.asarray(rows["end"], np.int32),
        is_impossible=np.asarray(rows["impossible"], np.int32), example_index=np.asarray(rows["example"], np.int64),
        doc_offset=np.asarray(rows["offset"], np.int64), char_spans=rows["spans"], max_context=rows["context"])


def span_text(example: SquadExample, features: QaFeatures, window: int, start: int, end: int) -> str:
    """The context substring of pieces start..end (positions in window `window`), stripped."""
    spans, offset = features.char_spans[window], features.doc_offset[window]
    return example.context[spans[start - offset, 0]: spans[end - offset, 1] + 1].strip()


@dataclasses.dataclass
class Answers:
    """Per question id: the predicted answer, the n-best list and (v2.0) the null odds."""

    predictions: dict[str, str]
    best_answers: dict[str, str]  # the best non-empty answer (what the best-threshold search switches to)
    nbest: dict[str, list[dict[str, float | str]]]
    null_odds: dict[str, float]


def _valid(features: QaFeatures, window: int, start: int, end: int, max_answer_length: int) -> bool:
    offset, pieces = features.doc_offset[window], len(features.char_spans[window])
    if not (offset <= start < offset + pieces and offset <= end < offset + pieces):
        return False
    return bool(features.max_context[window][start - offset]) and start <= end < start + max_answer_length


def _top(values: np.ndarray, count: int) -> np.ndarray:
    return np.argsort(-values, kind="stable")[:count]


def extract_answers(examples: Sequence[SquadExample], features: QaFeatures, outputs: dict[str, np.ndarray],
                    n_best_size: int, max_answer_length: int, version_2: bool,
                    null_score_diff_threshold: float | None) -> Answers:
    """Joins the windows' scores into answers (module doc). `outputs` holds either start_logits/end_logits
    [N, S] (span head) or the original v2.0 head's start/end beams and cls_logits."""
    windows_of: dict[int, list[int]] = {}
    for window, example_index in enumerate(features.example_index):
        windows_of.setdefault(int(example_index), []).append(window)
    beam = "start_top_index" in outputs
    result = Answers({}, {}, {}, {})
    for example_index, example in enumerate(examples):
        candidates, null_scores = [], []
        for window in windows_of.get(example_index, []):
            if beam:
                starts, ends = outputs["start_top_index"][window], outputs["end_top_index"][window]
                per_start = len(ends) // len(starts)
                pairs = [(int(starts[i]), int(ends[i * per_start + j]), float(outputs["start_top_log_probs"][window, i]),
                          float(outputs["end_top_log_probs"][window, i * per_start + j]))
                         for i in range(len(starts)) for j in range(per_start)]
                null_scores.append(float(outputs["cls_logits"][window]))
            else:
                start_logits, end_logits = outputs["start_logits"][window], outputs["end_logits"][window]
                pairs = [(int(s), int(e), float(start_logits[s]), float(end_logits[e]))
                         for s in _top(start_logits, n_best_size) for e in _top(end_logits, n_best_size)]
                null_scores.append(float(start_logits[0] + end_logits[0]))
            candidates += [(s_score + e_score, window, s, e, s_score, e_score) for s, e, s_score, e_score in pairs
                           if _valid(features, window, s, e, max_answer_length)]
        candidates.sort(key=lambda c: -c[0])
        nbest, seen = [], set()
        for score, window, start, end, start_score, end_score in candidates:
            text = span_text(example, features, window, start, end)
            if text in seen:
                continue
            seen.add(text)
            nbest.append({"text": text, "score": score, "start_logit": start_score, "end_logit": end_score})
            if len(nbest) == n_best_size:
                break
        if nbest:
            top = max(entry["score"] for entry in nbest)
            weights = [math.exp(entry["score"] - top) for entry in nbest]
            for entry, weight in zip(nbest, weights):
                entry["probability"] = weight / sum(weights)
        best = nbest[0]["text"] if nbest else ""
        qid = example.qas_id
        result.nbest[qid], result.best_answers[qid] = nbest, best
        if version_2:
            null = min(null_scores) if null_scores else 0.0
            odds = null if beam else null - (nbest[0]["score"] if nbest else -1e6)
            result.null_odds[qid] = odds
            no_answer = null_score_diff_threshold is not None and odds > null_score_diff_threshold
            result.predictions[qid] = "" if no_answer or not nbest else best
        else:
            result.predictions[qid] = best
    return result
