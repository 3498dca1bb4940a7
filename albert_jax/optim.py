"""Optimizers, learning-rate schedule and exact gradient accumulation for ALBERT pretraining.

Three optimizers are selectable (gin: `make_optimizer.optimizer`), each preceded by global-norm clipping:

  lamb        the original recipe's LAMB (reference section 3): moments without bias correction,
              u = m / (sqrt(v) + eps) + wd * w, update -lr * r * u with r = ||w|| / ||u|| (1 if a norm is 0),
              weight decay and trust ratio skipped for LayerNorm / bias parameters, and one trust ratio per
              layer slice of the stacked encoder weights.
  optax_lamb  `optax.lamb`: bias-corrected, trust ratio over every whole leaf (for comparison).
  adamw       `optax.adamw` with the same weight-decay exclusion.

Stacked weights: the scanned encoder keeps each per-layer weight as a stack of n unique copies on a leading
axis whose logical name is 'layers' (see albert_jax/model.py). Per-layer LAMB means one trust ratio per copy,
so the optimizer needs to know which leaves are stacked; `stacked_leaves` reads that from the logical axis
names of the boxed parameters (or of `nn.get_partition_spec(boxed)`), which is why `make_optimizer` takes them.

Use in a train step (params unboxed with `nn.unbox`; `num_microbatches` a Python int, static under jit):

    tx = make_optimizer(nn.get_partition_spec(boxed_params))      # gin picks optimizer and schedule
    opt_state = tx.init(params)
    grads, metrics = accumulate_gradients(losses.pretraining_loss_fn(model), params, batch, num_microbatches, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from albert_jax.losses import LossFn, batch_totals

Array = jax.Array
PyTree = Any

EXCLUDE_FROM_DECAY: tuple[str, ...] = ("LayerNorm", "layer_norm", "bias")
OPTIMIZERS: tuple[str, ...] = ("lamb", "optax_lamb", "adamw")
STACK_AXIS = "layers"


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_name(path: Sequence[Any]) -> str:
    """A tree path as 'albert/encoder/shared_layer/ffn/kernel': the string the exclusion patterns match."""
    return "/".join(_key_name(key) for key in path)


def _is_axes_leaf(x: Any) -> bool:
    return isinstance(x, (nn.Partitioned, PartitionSpec))


def decay_mask(params: PyTree, exclude: Sequence[str] = EXCLUDE_FROM_DECAY) -> PyTree:
    """True for leaves that get weight decay and the trust ratio: those whose path contains no `exclude` pattern.

    Works on unboxed, boxed or partition-spec trees alike (path-based), and is used as an optax mask callable.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(pattern in path_name(path) for pattern in exclude), params, is_leaf=_is_axes_leaf)


def stacked_leaves(params_axes: PyTree) -> PyTree:
    """True for leaves whose first logical axis is 'layers' (a stack of unique per-layer copies).

    `params_axes`: boxed parameters (`nn.Partitioned` leaves holding arrays or ShapeDtypeStructs, e.g. from
    `jax.eval_shape(init_params, ...)`) or the `nn.get_partition_spec` of them. The result has the structure
    of the unboxed parameters.
    """

    def first_axis_is_stack(path: Any, leaf: Any) -> bool:
        if isinstance(leaf, nn.Partitioned):
            names = tuple(leaf.names)
        elif isinstance(leaf, PartitionSpec):
            names = tuple(leaf)
        else:
            raise TypeError(f"parameter {path_name(path)!r} carries no logical axis names ({type(leaf).__name__}); "
                            "pass the boxed parameters or nn.get_partition_spec(boxed_params)")
        return bool(names) and names[0] == STACK_AXIS

    return jax.tree_util.tree_map_with_path(first_axis_is_stack, params_axes, is_leaf=_is_axes_leaf)


class MomentsState(NamedTuple):
    mu: PyTree
    nu: PyTree


def scale_by_moments_without_bias_correction(b1: float = 0.9, b2: float = 0.999,
                                             eps: float = 1e-6) -> optax.GradientTransformation:
    """u = m / (sqrt(v) + eps) with raw exponential moving averages m, v (moments kept in float32).

    Custom because optax has no such transform: `optax.scale_by_adam` always bias-corrects, and chaining
    `optax.ema(debias=False)` with `optax.scale_by_rms` would normalize by the second moment of the already
    averaged updates rather than of the gradients. The original LAMB does not bias-correct.
    """

    def init_fn(params: PyTree) -> MomentsState:
        if any(isinstance(x, nn.Partitioned) for x in jax.tree.leaves(params, is_leaf=_is_axes_leaf)):
            raise TypeError("the optimizer works on unboxed parameters: pass nn.unbox(params) to init/update")
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return MomentsState(mu=zeros, nu=zeros)

    def update_fn(updates: PyTree, state: MomentsState, params: PyTree = None) -> tuple[PyTree, MomentsState]:
        del params
        mu = jax.tree.map(lambda g, m: b1 * m + (1.0 - b1) * g.astype(jnp.float32), updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1.0 - b2) * jnp.square(g.astype(jnp.float32)), updates, state.nu)
        scaled = jax.tree.map(lambda g, m, v: (m / (jnp.sqrt(v) + eps)).astype(g.dtype), updates, mu, nu)
        return scaled, MomentsState(mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_layerwise_trust_ratio(stacked: PyTree) -> optax.GradientTransformation:
    """Multiply each update by r = ||w|| / ||u|| (r = 1 when either norm is 0; no clipping).

    Leaves marked in `stacked` (see `stacked_leaves`) get one ratio per slice along their leading axis, so a
    stack of n unique layer copies is treated as n separate tensors, as per-layer LAMB requires; other leaves
    get one ratio for the whole tensor. Custom because `optax.scale_by_trust_ratio` only works per leaf.
    Stacked leaves are looked up by path, so the transform also works under `optax.masked` (whose inner
    trees omit the masked-out leaves).
    """
    stacked_paths = frozenset(path_name(path) for path, flag in jax.tree_util.tree_flatten_with_path(stacked)[0]
                              if flag)

    def update_fn(updates: PyTree, state: optax.EmptyState, params: PyTree = None) -> tuple[PyTree, Any]:
        if params is None:
            raise ValueError("scale_by_layerwise_trust_ratio needs the parameters: call update(grads, state, params)")

        paths = {path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(updates)[0]}
        if stacked_paths and not stacked_paths & paths:
            raise ValueError("none of the stacked parameters is in the updates: the parameter tree does not match "
                             f"the axes tree the optimizer was built from (e.g. {sorted(stacked_paths)[0]!r})")

        def scale(path: Any, u: Array, w: Array) -> Array:
            reduce_axes = tuple(range(1 if path_name(path) in stacked_paths else 0, u.ndim))
            u32, w32 = u.astype(jnp.float32), w.astype(jnp.float32)
            w_norm = jnp.sqrt(jnp.sum(jnp.square(w32), axis=reduce_axes, keepdims=True))
            u_norm = jnp.sqrt(jnp.sum(jnp.square(u32), axis=reduce_axes, keepdims=True))
            safe = (w_norm > 0) & (u_norm > 0)
            ratio = jnp.where(safe, w_norm / jnp.where(safe, u_norm, 1.0), 1.0)
            return (u32 * ratio).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def reference_lamb(learning_rate: optax.ScalarOrSchedule, stacked: PyTree, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-6, weight_decay: float = 0.01,
                   exclude: Sequence[str] = EXCLUDE_FROM_DECAY) -> optax.GradientTransformation:
    """The original ALBERT LAMB (no clipping; `make_optimizer` adds it), assembled from optax pieces."""
    mask = lambda params: decay_mask(params, exclude)  # noqa: E731
    return optax.chain(
        scale_by_moments_without_bias_correction(b1, b2, eps),
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.masked(scale_by_layerwise_trust_ratio(stacked), mask),
        optax.scale_by_learning_rate(learning_rate),
    )


@gin.configurable
def make_schedule(peak_learning_rate: float = 0.00176, warmup_steps: int = 3125,
                  num_train_steps: int = 125000) -> optax.Schedule:
    """The original schedule: peak * step / warmup while step < warmup, else peak * (1 - min(step, T) / T).

    The decay is a power-1 polynomial from peak to 0 over all T steps counted from step 0 (not from the end of
    warmup), so the lr drops from ~peak to peak * (1 - warmup / T) at step == warmup, as in the original. Step 0
    has lr 0: optax evaluates the schedule at the update count before incrementing it, like the original's
    global_step.
    """
    if num_train_steps < 1 or warmup_steps < 0 or peak_learning_rate < 0:
        raise ValueError(f"need num_train_steps >= 1, warmup_steps >= 0, peak_learning_rate >= 0; got "
                         f"{num_train_steps}, {warmup_steps}, {peak_learning_rate}")

    def schedule(step: Any) -> Array:
        step = jnp.asarray(step)
        # Remaining steps in integers first: 1 - step / T in float32 loses ~1e-3 relative near the end.
        remaining = (num_train_steps - jnp.minimum(step, num_train_steps)).astype(jnp.float32)
        decayed = peak_learning_rate * remaining / num_train_steps
        if warmup_steps == 0:
            return decayed
        warmup = peak_learning_rate * step.astype(jnp.float32) / warmup_steps
        return jnp.where(step < warmup_steps, warmup, decayed)

    return schedule


@gin.configurable
def make_optimizer(params_axes: PyTree | None, optimizer: str = "lamb",
                   learning_rate: optax.ScalarOrSchedule | None = None, weight_decay: float = 0.01,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, clip_norm: float | None = 1.0,
                   exclude_from_decay: Sequence[str] = EXCLUDE_FROM_DECAY) -> optax.GradientTransformation:
    """Global-norm clipping followed by the chosen optimizer; apply it to the *unboxed* parameters.

    `params_axes`: boxed parameters or their `nn.get_partition_spec` (only 'lamb' needs it, to find stacked
    leaves). `learning_rate` defaults to `make_schedule()` (gin-configurable). `clip_norm=None` disables clipping.
    """
    if optimizer not in OPTIMIZERS:
        close = difflib.get_close_matches(optimizer, OPTIMIZERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown optimizer {optimizer!r}{hint}; known: {', '.join(OPTIMIZERS)}")
    lr = make_schedule() if learning_rate is None else learning_rate
    mask = lambda params: decay_mask(params, exclude_from_decay)  # noqa: E731
    if optimizer == "lamb":
        if params_axes is None:
            raise ValueError("optimizer 'lamb' needs params_axes (boxed params or nn.get_partition_spec of them) "
                             "to find the stacked per-layer weights")
        tx = reference_lamb(lr, stacked_leaves(params_axes), b1, b2, eps, weight_decay, exclude_from_decay)
    elif optimizer == "optax_lamb":
        tx = optax.lamb(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    else:
        tx = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    if clip_norm is None:
        return tx
    return optax.chain(optax.clip_by_global_norm(clip_norm), tx)


def accumulate_gradients(loss_fn: LossFn, params: PyTree, batch: dict[str, Array], num_microbatches: int,
                         rng: Array, totals_fn: Callable[[dict[str, Array]], dict[str, Array]] = batch_totals,
                         ) -> tuple[PyTree, dict[str, Array]]:
    """Full-batch gradient and metrics computed over `num_microbatches` slices of the batch's leading axis.

    The normalizers (`totals_fn(batch)`: total MLM weight, example count) are computed once from the whole
    batch and handed to `loss_fn`, which returns its microbatch's share of the full-batch loss (see
    `losses.pretraining_loss_share`). Gradients and metrics are then plain sums over microbatches, so the result
    equals the full-batch gradient exactly in math (up to float summation order), however unevenly the
    masked_lm_weights fall. Microbatch k takes rows k, k + n, k + 2n, ... (strided, not contiguous): with the
    batch sharded over data-parallel devices on its leading axis, every device then holds its own share of
    every microbatch and the split needs no communication. Microbatches are scanned with `lax.scan` (one
    traced body); each microbatch gets its own dropout key from `jax.random.split(rng, num_microbatches)`. Gradients are summed in float32
    and returned in the parameters' dtypes. Use inside jit, then apply one optimizer update.
    """
    leaves = jax.tree.leaves(batch)
    batch_size = leaves[0].shape[0]
    if num_microbatches < 1 or any(x.shape[0] != batch_size for x in leaves) or batch_size % num_microbatches:
        raise ValueError(f"num_microbatches={num_microbatches} must be >= 1 and divide the batch size "
                         f"{[x.shape[0] for x in leaves]} of every batch feature")
    totals = totals_fn(batch)
    grad_fn = jax.grad(loss_fn, has_aux=True)
    rngs = jax.random.split(rng, num_microbatches)
    if num_microbatches == 1:
        return grad_fn(params, batch, rngs[0], totals)

    micro = jax.tree.map(
        lambda x: x.reshape((batch_size // num_microbatches, num_microbatches) + x.shape[1:]).swapaxes(0, 1), batch)

    def step(carry: tuple[PyTree, dict[str, Array]], xs: tuple[dict[str, Array], Array]) -> tuple[Any, None]:
        grads, metrics = grad_fn(params, xs[0], xs[1], totals)
        acc_grads, acc_metrics = carry
        acc_grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc_grads, grads)
        acc_metrics = jax.tree.map(lambda a, m: a + m.astype(jnp.float32), acc_metrics, metrics)
        return (acc_grads, acc_metrics), None

    first = jax.tree.map(lambda x: x[0], micro)
    metric_shapes = jax.eval_shape(lambda: loss_fn(params, first, rngs[0], totals)[1])
    init = (jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
            jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.float32), metric_shapes))
    (grads, metrics), _ = jax.lax.scan(step, init, (micro, rngs))
    return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), metrics
