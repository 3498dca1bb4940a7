"""Statistics of a configured input pipeline, next to what its configuration implies.

    albert-jax data stats --gin_file=demo.gin -n 5000 [--split eval]

reads N examples through `loader.make_loader` (with diagnostics on) and prints: real tokens per example,
padding fraction, masked fraction (against the budget min(P, max(1, round(n * prob))) of the very lengths
seen), masked spans by length in words (against p(n), and p(n) cut to the words left at the end of a
sequence; the accepted spans also lose long n-grams to budget shortening and overlaps), the [MASK] / kept / random
split, and the sentence labels with the kinds of pairs behind them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from albert_jax.input import loader as loader_lib
from albert_jax.input.masking import Masker, MaskingConfig, num_to_predict
from albert_jax.input.records import KIND_IN_ORDER, KIND_NAMES, KIND_RANDOM_NEXT, KIND_SWAPPED, SpecialIds


def truncation_adjusted_ngram_probs(n_words: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Span-length distribution of the draws over all candidates: n ~ p(n) cut to the words left, so the last
    words of a sequence cannot start long spans (before budget shortening and overlaps)."""
    g = probs.size
    total = np.zeros(g)
    weight = 0
    for count, w in zip(*np.unique(np.asarray(n_words), return_counts=True)):
        for start in range(int(count)):
            m = min(g, int(count) - start)
            total[:m - 1] += w * probs[:m - 1]
            total[m - 1] += w * probs[m - 1:].sum()
        weight += w * int(count)
    return total / max(weight, 1)


def unmasked_ids(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """The original ids: masked positions put back to their labels."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_lm_weights"] > 0)
    ids[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][rows, slots]
    return ids


def compute_statistics(batches: Iterable[Mapping[str, np.ndarray]], n: int, masker: Masker,
                       instance_config: Mapping | None = None) -> dict:
    """Measured statistics of the first `n` real examples of `batches` (dicts with the diagnostics keys), each as
    {"measured": ..., "expected": ...}; `masker` supplies the masking config and the word rule."""
    parts: dict[str, list[np.ndarray]] = {}
    seen = 0
    for batch in batches:
        keep = batch["example_weights"] > 0
        for key, value in batch.items():
            parts.setdefault(key, []).append(np.asarray(value)[keep])
        seen += int(keep.sum())
        if seen >= n:
            break
    if seen == 0:
        raise ValueError("the pipeline produced no real examples")
    data = {key: np.concatenate(value)[:n] for key, value in parts.items()}
    config: MaskingConfig = masker.config
    special = masker.special
    lengths = data["input_mask"].sum(axis=1)
    seq_length = data["input_ids"].shape[1]
    weights = data["masked_lm_weights"] > 0
    originals = unmasked_ids(data)
    _, starts = masker.maskable_and_word_starts(originals, lengths)
    n_words = starts.sum(axis=1)

    rows, slots = np.nonzero(weights)
    shown = data["input_ids"][rows, data["masked_lm_positions"][rows, slots]]
    labels = data["masked_lm_ids"][rows, slots]
    is_mask = shown == special.mask
    kept = ~is_mask & (shown == labels)
    same_random = 1.0 / masker.num_random_ids
    keep_prob = 1.0 - config.mask_token_prob - config.random_token_prob

    spans = data["ngram_counts"].sum(axis=0).astype(np.float64)
    probs = config.ngram_probs()
    kinds = np.bincount(data["instance_kind"], minlength=len(KIND_NAMES))
    stats = {
        "examples": {"measured": int(lengths.size), "expected": n},
        "tokens_per_example": {"measured": float(lengths.mean()), "expected": f"<= {seq_length}",
                               "min": int(lengths.min()), "max": int(lengths.max())},
        "padding_fraction": {"measured": float(1.0 - lengths.mean() / seq_length),
                             "expected": f"{1.0 - _target_mean(instance_config, seq_length) / seq_length:.4f} "
                                         f"(if every chunk ended at its target)"},
        "masked_fraction": {"measured": float(weights.sum() / lengths.sum()),
                            "expected": float(num_to_predict(lengths, config).sum() / lengths.sum())},
        "budget_fill": {"measured": float(weights.sum() / num_to_predict(lengths, config).sum()), "expected": 1.0},
        "ngram_histogram": {"measured": (spans / max(spans.sum(), 1)).tolist(), "expected": probs.tolist(),
                            "expected_truncation_adjusted": truncation_adjusted_ngram_probs(n_words, probs).tolist(),
                            "spans": int(spans.sum())},
        "mask_split": {"measured": [float(is_mask.mean()), float(kept.mean()), float((~is_mask & ~kept).mean())],
                       "expected": [config.mask_token_prob, keep_prob + config.random_token_prob * same_random,
                                    config.random_token_prob * (1.0 - same_random)],
                       "predictions": int(rows.size)},
        "sentence_label_1_fraction": {"measured": float(data["sentence_labels"].mean())},
        "kinds": {"measured": dict(zip(KIND_NAMES, kinds.tolist()))},
    }
    if instance_config is not None:
        p = instance_config["negative_prob"]
        objective = instance_config["sentence_objective"]
        if objective == "sop":
            decided = kinds[KIND_IN_ORDER] + kinds[KIND_SWAPPED]
            stats["swap_rate"] = {"measured": float(kinds[KIND_SWAPPED] / max(decided, 1)), "expected": p}
        elif objective == "nsp":
            decided = kinds[KIND_IN_ORDER] + kinds[KIND_RANDOM_NEXT]
            stats["random_next_rate"] = {"measured": float(kinds[KIND_RANDOM_NEXT] / max(decided, 1)),
                                         "expected": f">= {p} (single-segment chunks add random B)"}
        stats["sentence_label_1_fraction"]["expected"] = (
            0.0 if objective == "none" else
            float((p * decided + (kinds[KIND_RANDOM_NEXT] if objective == "sop" else 0)) / lengths.size))
    return stats


def _target_mean(instance_config: Mapping | None, seq_length: int) -> float:
    """Mean real tokens if every chunk filled its target exactly (3 specials added)."""
    if instance_config is None:
        return float(seq_length)
    top = seq_length - 3
    short = instance_config["short_seq_prob"]
    return (1.0 - short) * top + short * (2 + top) / 2.0 + 3


def format_statistics(stats: Mapping[str, Mapping]) -> str:
    """A two-column table: measured | configuration."""
    lines = [f"{'statistic':28s} {'measured':40s} expected from the configuration"]
    for name, entry in stats.items():
        measured = _fmt(entry["measured"])
        expected = _fmt(entry.get("expected", ""))
        extra = {k: v for k, v in entry.items() if k not in ("measured", "expected")}
        lines.append(f"{name:28s} {measured:40s} {expected}" + (f"   {_fmt(extra)}" if extra else ""))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def pipeline_statistics(n: int, split: str = "train", batch_size: int = 256, seed: int = 0,
                        input_config: loader_lib.InputConfig | None = None) -> dict:
    """Statistics of the gin-configured pipeline of `split` (InputConfig, MaskingConfig bindings)."""
    config = dataclasses.replace(input_config or loader_lib.InputConfig(), diagnostics=True)
    loader = loader_lib.make_loader(split, batch_size, 0, 1, seed, config=config)
    try:
        info = loader.info
        word_start = (np.load(os.path.join(loader.directory, info["word_start"])) if info.get("word_start")
                      else None)
        masking = dataclasses.replace(loader.masking, whole_word=loader.masking.whole_word and word_start is not None)
        masker = Masker(masking, int(info["vocab_size"]), word_start, SpecialIds(**info["special"]), seed)
        return compute_statistics(loader, n, masker, info.get("instance_config"))
    finally:
        loader.close()
