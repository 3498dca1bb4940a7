"""Fine-tuning heads on the ALBERT encoder: sentence(-pair) classifier, SQuAD span heads, multiple choice.

* `AlbertClassifier` (GLUE): the pooled output, dropout, a dense layer to the labels (original run_classifier).
* `AlbertForQuestionAnswering` (SQuAD v1.1 and v2.0): one dense layer from every position of the sequence output
  to a start and an end logit, what transformers' `AlbertForQuestionAnswering` (`qa_outputs`) and the original
  `run_squad_v1.py` (`cls/squad/output_*`) compute. Unanswerable questions point at [CLS] (position 0).
* `AlbertForSquadV2` (the original `run_squad_v2.py` head): start logits; end logits from the sequence output
  concatenated with the hidden state at the start (the gold start when training, each of the `start_n_top`
  best starts when predicting); an answerability logit from [CLS] and the start-probability-weighted state.
  Positions where `p_mask` is 1 (question, [SEP], padding) can be neither start nor end.
* `AlbertForMultipleChoice` (RACE): each (article, question + option) sequence through the encoder, the pooled
  output, dropout, one logit per option (transformers' `AlbertForMultipleChoice`, the original `run_race.py`).

Kernels are truncated normal (std `initializer_range`) with zero biases, as everywhere in the model.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax.config import AlbertConfig
from albert_jax.model import AlbertModel, boxed, dense, truncated_normal

Array = jax.Array
NEG_INF = 1e30  # the original's mask value: logit * (1 - p_mask) - 1e30 * p_mask


class AlbertClassifier(nn.Module):
    """AlbertModel, dropout on the pooled output, dense layer to `num_labels` logits (1 = regression)."""

    config: AlbertConfig
    num_labels: int
    classifier_dropout: float = 0.1

    def setup(self) -> None:
        self.albert = AlbertModel(self.config)
        self.dropout = nn.Dropout(self.classifier_dropout)
        self.classifier = dense(self.num_labels, ("hidden", None), self.config, "classifier")

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array,
                 deterministic: bool = True) -> Array:
        _, pooled = self.albert(input_ids, input_mask, segment_ids, deterministic)
        return self.classifier(self.dropout(pooled, deterministic=deterministic)).astype(jnp.float32)


class AlbertForQuestionAnswering(nn.Module):
    """Sequence output -> dense(2) -> (start_logits [B, S], end_logits [B, S]), float32."""

    config: AlbertConfig

    def setup(self) -> None:
        self.albert = AlbertModel(self.config)
        self.qa_outputs = dense(2, ("hidden", None), self.config, "qa_outputs")

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array,
                 deterministic: bool = True) -> tuple[Array, Array]:
        sequence, _ = self.albert(input_ids, input_mask, segment_ids, deterministic)
        logits = self.qa_outputs(sequence).astype(jnp.float32)
        return logits[..., 0], logits[..., 1]


class AlbertForMultipleChoice(nn.Module):
    """input_ids [B, C, S] -> one logit per choice [B, C] from the pooled output of each (C = options)."""

    config: AlbertConfig
    classifier_dropout: float = 0.1

    def setup(self) -> None:
        self.albert = AlbertModel(self.config)
        self.dropout = nn.Dropout(self.classifier_dropout)
        self.choice_classifier = dense(1, ("hidden", None), self.config, "choice_classifier")

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array,
                 deterministic: bool = True) -> Array:
        batch, choices, length = input_ids.shape
        flat = lambda x: x.reshape(batch * choices, length)  # noqa: E731
        _, pooled = self.albert(flat(input_ids), flat(input_mask), flat(segment_ids), deterministic)
        logits = self.choice_classifier(self.dropout(pooled, deterministic=deterministic))
        return logits.astype(jnp.float32).reshape(batch, choices)


class AlbertForSquadV2(nn.Module):
    """The original SQuAD v2.0 head (module doc). Returns a dict of float32/int32 arrays:

    training (`start_positions` given): start_log_probs, end_log_probs [B, S], cls_logits [B];
    prediction: start_top_log_probs / start_top_index [B, k], end_top_log_probs / end_top_index [B, k * k']
    (row i * k' + j: the j-th best end for the i-th best start), cls_logits [B]. A larger cls_logit means
    "unanswerable" (it is trained with sigmoid cross-entropy against is_impossible).
    """

    config: AlbertConfig
    start_n_top: int = 5
    end_n_top: int = 5
    dropout: float = 0.1

    def setup(self) -> None:
        cfg, width = self.config, self.config.hidden_size
        self.albert = AlbertModel(cfg)
        self.start_logits = dense(1, ("hidden", None), cfg, "start_logits")
        self.end_dense_0 = dense(width, (None, "hidden"), cfg, "end_dense_0")
        self.end_layer_norm = nn.LayerNorm(epsilon=1e-12, dtype=jnp.float32, param_dtype=cfg.weight_dtype,
                                           scale_init=boxed(nn.initializers.ones, ("hidden",)),
                                           bias_init=boxed(nn.initializers.zeros, ("hidden",)),
                                           name="end_layer_norm")
        self.end_dense_1 = dense(1, ("hidden", None), cfg, "end_dense_1")
        self.answer_dense_0 = dense(width, (None, "hidden"), cfg, "answer_dense_0")
        self.answer_dropout = nn.Dropout(self.dropout)
        self.answer_dense_1 = nn.Dense(1, use_bias=False, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                                       kernel_init=boxed(truncated_normal(cfg.initializer_range),
                                                         ("hidden", None)), name="answer_dense_1")

    def _end_logits(self, sequence: Array, start_states: Array) -> Array:
        """End logits [..., S] from the sequence [B, S, H] and start states broadcast against it."""
        hidden = jnp.tanh(self.end_dense_0(jnp.concatenate([sequence, start_states], -1)))
        return self.end_dense_1(self.end_layer_norm(hidden.astype(jnp.float32)))[..., 0].astype(jnp.float32)

    def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array, p_mask: Array,
                 start_positions: Array | None = None, deterministic: bool = True) -> dict[str, Array]:
        sequence, _ = self.albert(input_ids, input_mask, segment_ids, deterministic)
        sequence = sequence.astype(jnp.float32)
        p_mask = p_mask.astype(jnp.float32)
        start_logits = self.start_logits(sequence)[..., 0].astype(jnp.float32)
        start_masked = start_logits * (1 - p_mask) - NEG_INF * p_mask
        start_log_probs = jax.nn.log_softmax(start_masked, -1)
        outputs: dict[str, Array] = {}
        if start_positions is not None:
            start_states = jnp.take_along_axis(sequence, start_positions[:, None, None].astype(jnp.int32), 1)
            end_logits = self._end_logits(sequence, jnp.broadcast_to(start_states, sequence.shape))
            end_masked = end_logits * (1 - p_mask) - NEG_INF * p_mask
            outputs.update(start_log_probs=start_log_probs, end_log_probs=jax.nn.log_softmax(end_masked, -1))
        else:
            top_log_probs, top_index = jax.lax.top_k(start_log_probs, self.start_n_top)  # [B, k]
            start_states = jnp.take_along_axis(sequence, top_index[..., None], 1)  # [B, k, H]
            tiled = jnp.broadcast_to(sequence[:, None], (sequence.shape[0], self.start_n_top) + sequence.shape[1:])
            states = jnp.broadcast_to(start_states[:, :, None], tiled.shape)
            end_logits = self._end_logits(tiled, states)  # [B, k, S]
            end_masked = end_logits * (1 - p_mask[:, None]) - NEG_INF * p_mask[:, None]
            end_top_log_probs, end_top_index = jax.lax.top_k(jax.nn.log_softmax(end_masked, -1), self.end_n_top)
            batch = sequence.shape[0]
            outputs.update(start_top_log_probs=top_log_probs, start_top_index=top_index,
                           end_top_log_probs=end_top_log_probs.reshape(batch, -1),
                           end_top_index=end_top_index.reshape(batch, -1))
        start_probs = jax.nn.softmax(start_masked, -1)
        start_feature = jnp.einsum("bsh,bs->bh", sequence, start_probs)
        answer = jnp.tanh(self.answer_dense_0(jnp.concatenate([start_feature, sequence[:, 0]], -1)))
        answer = self.answer_dropout(answer, deterministic=deterministic)
        outputs["cls_logits"] = self.answer_dense_1(answer)[..., 0].astype(jnp.float32)
        return outputs
