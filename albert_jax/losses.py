"""Every loss of the project and the metrics that come with it: pretraining (MLM + sentence objective) and the
fine-tuning task losses.

Pretraining metrics are kept as per-batch *sums* (`metric_sums`) and turned into means by one function,
`normalized_metrics`, against normalizers that may come from a larger batch than the sums (`batch_totals`).
That one definition serves three callers exactly: a whole-batch loss (sums over their own totals), a
microbatch's additive share of the full-batch loss under gradient accumulation (microbatch sums over the
full-batch totals, so shares and their gradients add up to the full-batch values), and evaluation over many
batches and hosts (sums added first, divided once at the end).

Rows with `example_weights` 0 (padding at the end of a finite eval pass, unreadable records) count toward
nothing, in the sums and in the normalizers alike.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from albert_jax.model import AlbertForPreTraining

Array = jax.Array
PyTree = Any
# loss_fn(params, microbatch, rng, totals) -> (this microbatch's share of the full-batch loss, additive metrics)
LossFn = Callable[[PyTree, dict[str, Array], Array, dict[str, Array]], tuple[Array, dict[str, Array]]]


def example_weights(batch: dict[str, Array]) -> Array:
    """[B] float32 row weights: the batch's `example_weights`, or ones when it has none."""
    labels = batch["sentence_labels"].reshape(-1)
    weights = batch.get("example_weights")
    return jnp.ones(labels.shape, jnp.float32) if weights is None else weights.reshape(-1).astype(jnp.float32)


def batch_totals(batch: dict[str, Array]) -> dict[str, Array]:
    """The normalizers of the pretraining metrics: total MLM weight and number of (real) examples."""
    rows = example_weights(batch)
    masked = batch["masked_lm_weights"].astype(jnp.float32) * rows[:, None]
    return {"masked_tokens": masked.sum(), "examples": rows.sum()}


def masked_lm_nll_and_hits(logits: Array, targets: Array) -> tuple[Array, Array]:
    """Per-prediction negative log-likelihood and hit (1.0 where the target scores highest) over the vocabulary.

    One pass for both: the hit compares the target's logit with the row maximum the log-sum-exp takes anyway,
    where `argmax(-1) == target` would add a second (index-tracking) reduction over the vocabulary; on XLA:CPU
    that reduction and the gradient's layout around it cost ~8% of the demo step (docs/PERF.md). A target tied
    with another piece for the maximum counts as a hit (argmax would break the tie by index).
    """
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    row_max = jax.lax.stop_gradient(logits.max(-1))
    # log sum exp(logits - max) - (target - max): both terms shifted, so no precision is lost to large logits.
    nll = jnp.log(jnp.exp(logits - row_max[..., None]).sum(-1)) - (target_logit - row_max)
    return nll, (target_logit >= row_max).astype(jnp.float32)


def metric_sums(mlm_logits: Array, sentence_logits: Array, batch: dict[str, Array]) -> dict[str, Array]:
    """Per-batch sums (not means) of the pretraining metrics, so that batches and hosts add up exactly."""
    labels = batch["sentence_labels"].reshape(-1)
    rows = example_weights(batch)
    weights = batch["masked_lm_weights"].astype(jnp.float32) * rows[:, None]
    nll, correct = masked_lm_nll_and_hits(mlm_logits.astype(jnp.float32), batch["masked_lm_ids"])
    sentence_logits = sentence_logits.astype(jnp.float32)
    sentence_nll = optax.softmax_cross_entropy_with_integer_labels(sentence_logits, labels)
    return {
        "masked_lm_loss_sum": (nll * weights).sum(),
        "masked_lm_correct": (correct * weights).sum(),
        "masked_tokens": weights.sum(),
        "sentence_order_loss_sum": (sentence_nll * rows).sum(),
        "sentence_order_correct": ((sentence_logits.argmax(-1) == labels) * rows).sum(),
        "examples": rows.sum(),
    }


def normalized_metrics(sums: dict[str, Array], totals: dict[str, Array]) -> dict[str, Array]:
    """Means of `sums` over `totals`; the MLM loss divides by (weight total + 1e-5) as the original does.

    `masked_tokens` and `examples` stay the counts of `sums`, so they add up across microbatches and batches.
    """
    examples = jnp.maximum(totals["examples"], 1.0)
    return {
        "masked_lm_loss": sums["masked_lm_loss_sum"] / (totals["masked_tokens"] + 1e-5),
        "masked_lm_accuracy": sums["masked_lm_correct"] / jnp.maximum(totals["masked_tokens"], 1.0),
        "sentence_order_loss": sums["sentence_order_loss_sum"] / examples,
        "sentence_order_accuracy": sums["sentence_order_correct"] / examples,
        "masked_tokens": sums["masked_tokens"],
        "examples": sums["examples"],
    }


def metrics_from_sums(sums: dict[str, Array]) -> dict[str, Array]:
    """Means of accumulated `metric_sums` (their own normalizers)."""
    return normalized_metrics(sums, sums)


def pretraining_loss_share(mlm_logits: Array, sentence_logits: Array, microbatch: dict[str, Array],
                           totals: dict[str, Array],
                           sentence_loss_weight: float = 1.0) -> tuple[Array, dict[str, Array]]:
    """A microbatch's additive share of the full batch's loss MLM + weight * sentence loss, with its metrics.

    Per-microbatch means averaged would not add up: each would normalize by its own MLM weight, which differs
    when masked_lm_weights fall unevenly across microbatches. `sentence_loss_weight` = 0 trains without a
    sentence objective (paper Table 5, "none").
    """
    metrics = normalized_metrics(metric_sums(mlm_logits, sentence_logits, microbatch), totals)
    loss = metrics["masked_lm_loss"] + sentence_loss_weight * metrics["sentence_order_loss"]
    return loss, dict(metrics, loss=loss)


def pretraining_loss(mlm_logits: Array, sentence_logits: Array, batch: dict[str, Array],
                     sentence_loss_weight: float = 1.0) -> tuple[Array, dict[str, Array]]:
    """The whole batch's loss MLM + weight * sentence loss, with the metrics the original reports."""
    return pretraining_loss_share(mlm_logits, sentence_logits, batch, batch_totals(batch), sentence_loss_weight)


def pretraining_loss_fn(model: AlbertForPreTraining, sentence_loss_weight: float = 1.0,
                        deterministic: bool = False) -> LossFn:
    """The `loss_fn` for `optim.accumulate_gradients`: apply `model` (dropout from `rng`), take the loss share."""

    def loss_fn(params: PyTree, microbatch: dict[str, Array], rng: Array,
                totals: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        mlm_logits, sentence_logits = model.apply(
            {"params": params}, microbatch["input_ids"], microbatch["input_mask"], microbatch["segment_ids"],
            microbatch["masked_lm_positions"], deterministic=deterministic, rngs={"dropout": rng})
        return pretraining_loss_share(mlm_logits, sentence_logits, microbatch, totals, sentence_loss_weight)

    return loss_fn


def classification_loss(logits: Array, batch: dict[str, Array], regression: bool) -> tuple[Array, dict[str, Array]]:
    """Fine-tuning: mean cross-entropy (classes) or squared error (regression) over the rows of weight 1."""
    weights = batch["example_weights"]
    count = jnp.maximum(weights.sum(), 1.0)
    if regression:
        per_example = jnp.square(logits[:, 0] - batch["labels"])
        return (per_example * weights).sum() / count, {}
    labels = batch["labels"].astype(jnp.int32)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = ((logits.argmax(-1) == labels) * weights).sum()
    return (per_example * weights).sum() / count, {"accuracy": correct / count}


def _weighted_mean(per_example: Array, weights: Array) -> Array:
    return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def span_loss(start_logits: Array, end_logits: Array, batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """SQuAD span head: (cross-entropy of the start + of the end position) / 2 over the sequence, row-weighted
    (the original run_squad_v1 and transformers' AlbertForQuestionAnswering; unanswerable rows point at 0)."""
    weights = batch["example_weights"]
    start = optax.softmax_cross_entropy_with_integer_labels(start_logits, batch["start_positions"])
    end = optax.softmax_cross_entropy_with_integer_labels(end_logits, batch["end_positions"])
    exact = (start_logits.argmax(-1) == batch["start_positions"]) & (end_logits.argmax(-1) == batch["end_positions"])
    return _weighted_mean((start + end) / 2, weights), {"span_accuracy": _weighted_mean(exact, weights)}


def squad_v2_loss(outputs: dict[str, Array], batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """The original v2.0 head: (start NLL + end NLL) / 2 + 0.5 * sigmoid cross-entropy(cls_logits, is_impossible)."""
    weights = batch["example_weights"]
    pick = lambda log_probs, positions: -jnp.take_along_axis(  # noqa: E731
        log_probs, positions[:, None].astype(jnp.int32), 1)[:, 0]
    span = (pick(outputs["start_log_probs"], batch["start_positions"])
            + pick(outputs["end_log_probs"], batch["end_positions"])) / 2
    impossible = batch["is_impossible"].astype(jnp.float32)
    answerability = optax.sigmoid_binary_cross_entropy(outputs["cls_logits"], impossible)
    correct = (outputs["cls_logits"] > 0) == (impossible > 0.5)
    return (_weighted_mean(span, weights) + 0.5 * _weighted_mean(answerability, weights),
            {"answerability_accuracy": _weighted_mean(correct, weights)})
