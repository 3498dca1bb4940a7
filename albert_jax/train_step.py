"""The pure numerics of training: the train state, its sharded creation, `train_step` and `eval_step`.

`train_step(state, batch) -> (state, metrics)` is a pure function jitted with in/out shardings and a donated
state. A step whose loss or gradient norm is not finite leaves parameters and optimizer state untouched
and bumps the `nonfinite_streak` counter; the loop decides when to stop. The machinery is model-agnostic
(`model_state_shardings`, `create_model_state`, `make_update_step` take any model's init and loss): pretraining
and fine-tuning build their states and steps from the same functions.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from albert_jax import partitioning
from albert_jax.config import AlbertConfig
from albert_jax.losses import LossFn, batch_totals, metric_sums, pretraining_loss_fn
from albert_jax.model import AlbertForPreTraining, abstract_params, init_params

Array = jax.Array
Batch = dict[str, Array]
ParamsInit = Callable[[Array], Any]  # key -> a model's boxed parameters (logical axis names attached)


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; a pytree that orbax saves whole."""

    step: Array
    params: Any
    opt_state: Any
    rng: Array  # base dropout key; step k uses fold_in(rng, k), so no key needs updating
    nonfinite_streak: Array  # consecutive skipped updates
    nonfinite_total: Array


def _init_state(init_fn: ParamsInit, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """The initial (unboxed) state of the model whose boxed parameters `init_fn(key)` makes."""
    params_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = nn.unbox(init_fn(params_rng))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), rng=dropout_rng,
                      nonfinite_streak=zero, nonfinite_total=zero)


def pretraining_init(config: AlbertConfig) -> ParamsInit:
    """`init_fn` of AlbertForPreTraining (the pretraining model)."""
    return functools.partial(init_params, config)


def opt_state_specs(opt_state: Any, params: Any, param_specs: Any) -> Any:
    """Logical specs of the optimizer state: every sub-tree shaped like the parameters (moments) takes the
    parameters' specs; everything else (counts, scalars) is replicated."""
    params_def = jax.tree.structure(params)

    def params_like(node: Any) -> bool:
        return jax.tree.structure(node) == params_def

    return jax.tree.map(lambda node: param_specs if params_like(node) else PartitionSpec(), opt_state,
                        is_leaf=params_like)


def model_state_shardings(init_fn: ParamsInit, tx: optax.GradientTransformation, mesh: Mesh, rules: Any,
                          boxed_params: Any | None = None) -> tuple[TrainState, Any]:
    """(abstract state, matching tree of NamedShardings) of any model, computed without allocating anything.

    `boxed_params`: the abstract boxed parameter tree when the caller already has it (its logical axis names give
    the parameter shardings; the optimizer moments follow them).
    """
    abstract = jax.eval_shape(lambda: _init_state(init_fn, tx, 0))
    boxed = boxed_params if boxed_params is not None else jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    param_specs = nn.get_partition_spec(boxed)
    specs = TrainState(step=PartitionSpec(), params=param_specs,
                       opt_state=opt_state_specs(abstract.opt_state, abstract.params, param_specs),
                       rng=PartitionSpec(), nonfinite_streak=PartitionSpec(), nonfinite_total=PartitionSpec())
    return abstract, partitioning.logical_to_sharding(specs, mesh, rules)


def state_shardings(config: AlbertConfig, tx: optax.GradientTransformation, mesh: Mesh,
                    rules: Any) -> tuple[TrainState, Any]:
    """`model_state_shardings` of the pretraining model."""
    return model_state_shardings(pretraining_init(config), tx, mesh, rules, abstract_params(config))


def create_model_state(init_fn: ParamsInit, tx: optax.GradientTransformation, mesh: Mesh, rules: Any, seed: int,
                       shardings: Any) -> TrainState:
    """The initial state, created directly sharded: jit of init with out_shardings, never on one device."""
    init = jax.jit(lambda: _init_state(init_fn, tx, seed), out_shardings=shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        return init()


def create_state(config: AlbertConfig, tx: optax.GradientTransformation, mesh: Mesh, rules: Any,
                 seed: int, shardings: Any | None = None) -> TrainState:
    """The pretraining model's initial state, created sharded (`shardings`: `state_shardings`'s, if at hand)."""
    if shardings is None:
        _, shardings = state_shardings(config, tx, mesh, rules)
    return create_model_state(pretraining_init(config), tx, mesh, rules, seed, shardings)


def make_update_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: Callable[[Array], Array],
                     num_microbatches: int = 1, totals_fn: Callable[[Batch], dict[str, Array]] = batch_totals,
                     param_logical_specs: Any | None = None,
                     ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The pure `train_step(state, batch) -> (state, metrics)` of any model: (accumulated) gradient of `loss_fn`,
    one optimizer update, and the non-finite guard (a step whose loss or gradient norm is not finite leaves
    parameters and optimizer state untouched and bumps `nonfinite_streak`).

    `param_logical_specs` (the parameters' logical PartitionSpecs): gather the parameters once, accumulate
    device-local gradients over the microbatches and reduce them once per step (`local_accumulate_gradients`).
    """
    from albert_jax import optim  # local: optim is heavier and only training needs it

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if param_logical_specs is not None:
            grads, metrics = local_accumulate_gradients(loss_fn, state.params, batch, num_microbatches, rng,
                                                        totals_fn, param_logical_specs)
        else:
            grads, metrics = optim.accumulate_gradients(loss_fn, state.params, batch, num_microbatches, rng,
                                                        totals_fn)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
        new_state = state.replace(
            step=state.step + 1, params=keep(new_params, state.params), opt_state=keep(new_opt_state, state.opt_state),
            nonfinite_streak=streak, nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32))
        metrics = dict(metrics, learning_rate=schedule(state.step), grad_norm=grad_norm, nonfinite_streak=streak,
                       update_skipped=(~finite).astype(jnp.float32), param_norm=optax.tree.norm(state.params))
        return new_state, metrics

    return train_step


def make_train_step(config: AlbertConfig, tx: optax.GradientTransformation,
                    schedule: Callable[[Array], Array], sentence_loss_weight: float = 1.0,
                    num_microbatches: int = 1) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The pretraining `train_step(state, batch) -> (state, metrics)` (MLM + weighted sentence loss)."""
    loss_fn = pretraining_loss_fn(AlbertForPreTraining(config), sentence_loss_weight)
    specs = nn.get_partition_spec(abstract_params(config))
    return make_update_step(loss_fn, tx, schedule, num_microbatches, param_logical_specs=specs)


def local_accumulate_gradients(loss_fn: LossFn, params: Any, batch: Batch, num_microbatches: int, rng: Array,
                               totals_fn: Callable[[Batch], dict[str, Array]], param_logical_specs: Any,
                               ) -> tuple[Any, dict[str, Array]]:
    """`optim.accumulate_gradients` with one gather of the parameters and one gradient reduction per step.

    Left to the SPMD partitioner, XLA may re-gather the shared layer inside the layer loop (it did for small
    widths) and the microbatch loop all-reduces every microbatch's full gradient (the accumulator is a loop
    carry it cannot leave unreduced). Here the data-parallel mesh axes (data, fsdp) are
    manual (`jax.shard_map`; tensor stays automatic): each device all-gathers its FSDP shards once, runs
    `optim.accumulate_gradients` on its own rows (the strided microbatch split of the local rows is the global
    split's, since the batch is sharded in contiguous blocks of a multiple of `num_microbatches` rows), and the
    local float32 sums are reduce-scattered (psum where a parameter is not sharded on an axis) once after the
    loop. The normalizers come from the whole batch, so the result is the full-batch gradient, as before, up to
    float summation order. The price: while the step runs each device holds the whole (tensor-split) parameters
    and one float32 gradient, which for ALBERT's shared layer is what FSDP gathers anyway.

    Dropout: each device folds its position on the data-parallel axes into the step's key, so every device
    draws its own masks for its own rows (without it all devices would reuse one mask pattern). The masks are
    then a function of (seed, step, data-parallel layout): the same mesh reproduces a run bit for bit, a
    different data x fsdp split draws different (equally distributed) masks. Without dropout the key is unused
    and every mesh computes the single-device result. Without a mesh in context (or a mesh without
    data-parallel axes) it is `optim.accumulate_gradients`.
    """
    from albert_jax import optim

    mesh = jax.sharding.get_abstract_mesh()
    manual = tuple(a for a in partitioning.DATA_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    if not manual:
        return optim.accumulate_gradients(loss_fn, params, batch, num_microbatches, rng, totals_fn)
    rules = nn.get_logical_axis_rules()
    specs = jax.tree.map(lambda spec, p: partitioning.manual_axes_spec(
        nn.logical_to_mesh_axes(tuple(spec), rules), p.ndim, manual), param_logical_specs, params,
        is_leaf=lambda x: isinstance(x, PartitionSpec))
    local_rules = partitioning.without_mesh_axes(rules, manual)
    totals = totals_fn(batch)

    def local(params: Any, batch: Batch, rng: Array, totals: dict[str, Array]) -> tuple[Any, dict[str, Array]]:
        # The barrier keeps XLA from sinking the gathers back into the layer loop (it does without one).
        rng = jax.random.fold_in(rng, jax.lax.axis_index(manual))
        full = jax.lax.optimization_barrier(
            jax.tree.map(lambda p, spec: partitioning.gather_dims(p, spec), params, specs))
        with nn.logical_axis_rules(list(local_rules)):
            grads, metrics = optim.accumulate_gradients(loss_fn, full, batch, num_microbatches, rng,
                                                        lambda _: totals)
        grads = jax.tree.map(lambda g, spec: partitioning.reduce_dims(g, spec, manual), grads, specs)
        return grads, jax.tree.map(lambda m: jax.lax.psum(m, manual), metrics)

    batch_specs = jax.tree.map(lambda _: PartitionSpec(manual), batch)
    return jax.shard_map(local, mesh=mesh, in_specs=(specs, batch_specs, PartitionSpec(), PartitionSpec()),
                         out_specs=(specs, PartitionSpec()), axis_names=set(manual),
                         check_vma=False)(params, batch, rng, totals)


def make_eval_step(config: AlbertConfig) -> Callable[[Any, Batch], dict[str, Array]]:
    """`eval_step(params, batch) -> metric sums`, so that batches add up exactly (see `metric_sums`)."""
    model = AlbertForPreTraining(config)

    def eval_step(params: Any, batch: Batch) -> dict[str, Array]:
        mlm_logits, sentence_logits = model.apply(
            {"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
            batch["masked_lm_positions"], deterministic=True)
        return metric_sums(mlm_logits, sentence_logits, batch)

    return eval_step


def jit_train_step(train_step: Callable, state_sharding: Any, mesh: Mesh) -> Callable:
    """jit with explicit shardings: state in/out on its own layout (donated), batch split over data axes."""
    batch_sharding = partitioning.batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding),
                   out_shardings=(state_sharding, partitioning.replicated(mesh)), donate_argnums=(0,))
