"""Tests of albert_jax/optim.py: reference LAMB vs a NumPy transcription, schedule, clipping, masks, selection,
gin files and exact gradient accumulation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from albert_jax import optim
from albert_jax.config import AlbertConfig
from albert_jax.losses import pretraining_loss, pretraining_loss_fn
from albert_jax.model import AlbertForPreTraining, init_params

ROOT = Path(__file__).resolve().parents[1]
# Attention shared (stacks of 1), FFN unique per layer (stacks of 3): both stack sizes in one tree.
CONFIG = AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=16, sharing="attention")

EXPECTED_EXCLUDED = {
    "albert/embeddings/layer_norm/bias", "albert/embeddings/layer_norm/scale",
    "albert/encoder/embedding_projection/bias",
    "albert/encoder/shared_layer/attention_layer_norm/bias", "albert/encoder/shared_layer/attention_layer_norm/scale",
    "albert/encoder/shared_layer/attention_output/bias",
    "albert/encoder/shared_layer/ffn/bias", "albert/encoder/shared_layer/ffn_output/bias",
    "albert/encoder/shared_layer/ffn_layer_norm/bias", "albert/encoder/shared_layer/ffn_layer_norm/scale",
    "albert/encoder/shared_layer/key/bias", "albert/encoder/shared_layer/query/bias",
    "albert/encoder/shared_layer/value/bias",
    "albert/pooler/bias", "mlm_dense/bias", "mlm_layer_norm/bias", "mlm_layer_norm/scale", "mlm_output_bias",
    "sentence_classifier/bias",
}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> {'a/b/c': float64 array}, written independently of optim.path_name."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        out.update(flatten(value, name) if isinstance(value, dict) else {name: np.asarray(value, np.float64)})
    return out


def unflatten_like(flat: dict[str, np.ndarray], like: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {key: unflatten_like(flat, value, f"{prefix}/{key}" if prefix else key) if isinstance(value, dict)
            else jnp.asarray(flat[f"{prefix}/{key}" if prefix else key], jnp.float32) for key, value in like.items()}


@pytest.fixture(scope="module")
def boxed() -> Any:
    return jax.jit(init_params, static_argnums=0)(CONFIG, jax.random.key(0))


PEAK, WARMUP, TOTAL = 0.01, 2, 10  # a short schedule: lr 0, 0.005, then 0.008, 0.007, ...


@pytest.fixture(scope="module")
def jitted(boxed: Any) -> dict[str, tuple[optax.GradientTransformation, Any]]:
    """Each optimizer on the short schedule with its jitted update, compiled once for the whole module."""
    out = {}
    for name in optim.OPTIMIZERS:
        tx = optim.make_optimizer(nn.get_partition_spec(boxed), name,
                                  learning_rate=optim.make_schedule(PEAK, WARMUP, TOTAL))
        out[name] = (tx, jax.jit(tx.update))
    return out


def numpy_schedule(step: int, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * step / warmup
    return peak * (1.0 - min(step, total) / total)


def numpy_lamb(params: dict[str, np.ndarray], grads_per_step: list[dict[str, np.ndarray]], peak: float, warmup: int,
               total: int, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, wd: float = 0.01,
               clip: float = 1.0) -> dict[str, np.ndarray]:
    """The reference's LAMB, one tensor at a time; encoder shared_layer leaves are stacks, one ratio per slice."""
    w = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    for step, grads in enumerate(grads_per_step):
        global_norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
        factor = clip / max(global_norm, clip)
        lr = numpy_schedule(step, peak, warmup, total)
        for name in w:
            g = grads[name] * factor
            m[name] = b1 * m[name] + (1 - b1) * g
            v[name] = b2 * v[name] + (1 - b2) * g * g
            u = m[name] / (np.sqrt(v[name]) + eps)
            excluded = any(pattern in name for pattern in ("LayerNorm", "layer_norm", "bias"))
            if excluded:
                w[name] = w[name] - lr * u
                continue
            u = u + wd * w[name]
            stacked = name.startswith("albert/encoder/shared_layer/")
            slices = range(w[name].shape[0]) if stacked else [slice(None)]
            new = w[name].copy()
            for s in slices:
                w_norm, u_norm = np.linalg.norm(w[name][s]), np.linalg.norm(u[s])
                ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                new[s] = w[name][s] - lr * ratio * u[s]
            w[name] = new
    return w


def test_reference_lamb_matches_numpy_transcription(boxed: Any, jitted: dict[str, Any]) -> None:
    params = flatten(nn.unbox(boxed))
    params["albert/encoder/shared_layer/ffn/kernel"][1] = 0.0  # zero slice with zero grads: both norms 0
    params["albert/encoder/shared_layer/query/kernel"][:] = 0.0  # zero weights, nonzero grads: ||w|| = 0
    params["albert/pooler/kernel"][:] = 0.0
    rng = np.random.default_rng(0)
    size = sum(p.size for p in params.values())
    grads_per_step = []
    for scale in (0.5, 3.0, 0.8, 10.0, 0.3):  # global norms around these: clipping active on some steps only
        grads = {k: rng.normal(size=p.shape) * scale / np.sqrt(size) for k, p in params.items()}
        grads["albert/encoder/shared_layer/ffn/kernel"][1] = 0.0
        grads_per_step.append(grads)
    expected = numpy_lamb(params, grads_per_step, PEAK, WARMUP, TOTAL)

    like = nn.unbox(boxed)
    tx, update = jitted["lamb"]
    w = unflatten_like(params, like)
    state = tx.init(w)
    for grads in grads_per_step:
        updates, state = update(unflatten_like(grads, like), state, w)
        w = optax.apply_updates(w, updates)
    got = flatten(jax.device_get(w))
    assert got.keys() == expected.keys()
    for name in expected:
        # Compare the total change; atol ~ the float32 spacing of weights of size ~0.05.
        np.testing.assert_allclose(got[name] - params[name], expected[name] - params[name], rtol=1e-4, atol=1e-8,
                                   err_msg=name)
    assert np.all(got["albert/encoder/shared_layer/ffn/kernel"][1] == 0.0)
    assert np.any(got["albert/encoder/shared_layer/query/kernel"] != 0.0)

    unclipped = numpy_lamb(params, grads_per_step, PEAK, WARMUP, TOTAL, clip=1e9)
    assert not np.allclose(unclipped["mlm_dense/kernel"], expected["mlm_dense/kernel"], rtol=1e-6, atol=0)


def test_schedule_values() -> None:
    schedule = optim.make_schedule()  # reference defaults: 0.00176, 3125 warmup, 125000 steps
    for step in (0, 1, 1000, 3124, 3125, 3126, 62500, 124999, 125000, 200000):
        np.testing.assert_allclose(float(schedule(step)), numpy_schedule(step, 0.00176, 3125, 125000),
                                   rtol=1e-5, atol=1e-12, err_msg=str(step))
    assert float(schedule(0)) == 0.0 and float(schedule(125000)) == 0.0
    no_warmup = optim.make_schedule(1.0, 0, 100)
    assert float(no_warmup(0)) == 1.0 and abs(float(no_warmup(50)) - 0.5) < 1e-7


def test_clipping_before_moments(boxed: Any, jitted: dict[str, Any]) -> None:
    params = nn.unbox(boxed)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.1, p.dtype), params)
    norm = float(optax.tree.norm(grads))
    assert norm > 1.0
    tx, update = jitted["lamb"]
    _, state = update(grads, tx.init(params), params)
    moments = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optim.MomentsState))
               if isinstance(s, optim.MomentsState)]
    assert len(moments) == 1
    for mu in jax.tree.leaves(moments[0].mu):  # m = (1 - b1) * clipped g
        np.testing.assert_allclose(np.asarray(mu), 0.1 * 0.1 / norm, rtol=1e-5)


def test_masks(boxed: Any) -> None:
    names = flatten(nn.unbox(boxed)).keys()
    excluded = {name for name, keep in zip(names, jax.tree.leaves(optim.decay_mask(nn.unbox(boxed)))) if not keep}
    assert excluded == EXPECTED_EXCLUDED
    for axes in (boxed, nn.get_partition_spec(boxed)):
        stacked = {name for name, s in zip(names, jax.tree.leaves(optim.stacked_leaves(axes))) if s}
        assert stacked == {n for n in names if n.startswith("albert/encoder/shared_layer/")}
    with pytest.raises(TypeError, match="logical axis names"):
        optim.stacked_leaves(nn.unbox(boxed))


@pytest.mark.parametrize("name", ["lamb", "adamw", "optax_lamb"])
def test_zero_gradient_gives_pure_decay_only_where_not_excluded(boxed: Any, jitted: dict[str, Any],
                                                                name: str) -> None:
    params = nn.unbox(boxed)
    tx, update = jitted[name]
    zeros = jax.tree.map(jnp.zeros_like, params)
    _, state = update(zeros, tx.init(params), params)  # step 0: lr 0
    updates = flatten(jax.device_get(update(zeros, state, params)[0]))  # step 1: lr = PEAK / WARMUP
    weights = flatten(jax.device_get(params))
    lr = PEAK / WARMUP
    for key, u in updates.items():
        if key in EXPECTED_EXCLUDED:
            assert np.all(u == 0.0), key
        elif name == "adamw":
            np.testing.assert_allclose(u, -lr * 0.01 * weights[key], rtol=1e-5, err_msg=key)
        else:  # trust ratio ||w|| / ||wd w|| = 1 / wd: the update is -lr * w
            np.testing.assert_allclose(u, -lr * weights[key], rtol=1e-4, err_msg=key)


def test_optimizers_selectable() -> None:
    """Each name builds clipping + that optimizer; checked on a toy tree (the real tree: zero-gradient test)."""
    axes = {"dense": {"kernel": PartitionSpec("layers", "hidden"), "bias": PartitionSpec("layers")},
            "layer_norm": {"scale": PartitionSpec(None)}}
    shapes = {"dense": {"kernel": (2, 3), "bias": (2,)}, "layer_norm": {"scale": (3,)}}
    params = jax.tree.map(lambda shape: jnp.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape), shapes,
                          is_leaf=lambda x: isinstance(x, tuple))
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p) * 0.5, params)
    mask = lambda p: optim.decay_mask(p)  # noqa: E731
    cases = {"optax_lamb": optax.lamb(0.01, eps=1e-6, weight_decay=0.01, mask=mask),
             "adamw": optax.adamw(0.01, eps=1e-6, weight_decay=0.01, mask=mask)}
    results = {}
    for name in ("lamb", "optax_lamb", "adamw"):
        tx = optim.make_optimizer(axes, name, learning_rate=0.01)
        results[name] = tx.update(grads, tx.init(params), params)[0]
        if name in cases:
            direct = optax.chain(optax.clip_by_global_norm(1.0), cases[name])
            want = direct.update(grads, direct.init(params), params)[0]
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), results[name], want)
    assert not np.allclose(results["lamb"]["dense"]["kernel"], results["optax_lamb"]["dense"]["kernel"])
    with pytest.raises(ValueError, match="known: lamb, optax_lamb, adamw"):
        optim.make_optimizer(axes, "lars")
    lamb = optim.make_optimizer(axes, "lamb")
    with pytest.raises(TypeError, match="unboxed"):
        lamb.init({"dense": {"kernel": nn.Partitioned(params["dense"]["kernel"], ("layers", "hidden"))}})
    renamed = {"other": params["dense"]}
    with pytest.raises(ValueError, match="does not match the axes tree"):
        lamb.update(renamed, lamb.init(renamed), renamed)


@pytest.mark.parametrize("gin_file,optimizer", [("lamb.gin", "lamb"), ("adamw.gin", "adamw")])
def test_gin_files(boxed: Any, gin_file: str, optimizer: str) -> None:
    gin.clear_config()
    try:
        gin.parse_config_file(str(ROOT / "experiments" / "optim" / gin_file))
        assert gin.query_parameter("make_optimizer.optimizer") == optimizer
        optim.make_optimizer(boxed)
        if optimizer == "lamb":
            np.testing.assert_allclose(float(optim.make_schedule()(3125 - 1)), 0.00176 * 3124 / 3125, rtol=1e-6)
    finally:
        gin.clear_config()


def tiny_batch() -> dict[str, jax.Array]:
    rng = np.random.default_rng(3)
    batch_size, length, predictions = 8, 8, 3
    # Microbatch k holds rows k, k + n, ...: 4 of them hold 6, 0, 5, 1 masked tokens, 2 hold 11 and 1.
    counts = [3, 0, 3, 0, 3, 0, 2, 1]
    weights = np.array([[1.0] * c + [0.0] * (predictions - c) for c in counts], np.float32)
    return {
        "input_ids": jnp.asarray(rng.integers(5, 50, (batch_size, length)), jnp.int32),
        "input_mask": jnp.asarray(np.arange(length)[None, :] < rng.integers(4, length + 1, (batch_size, 1)),
                                  jnp.int32),
        "segment_ids": jnp.asarray(np.arange(length)[None, :] >= 4, jnp.int32).repeat(batch_size, 0),
        "masked_lm_positions": jnp.asarray(rng.integers(1, 4, (batch_size, predictions)), jnp.int32),
        "masked_lm_ids": jnp.asarray(rng.integers(5, 50, (batch_size, predictions)), jnp.int32),
        "masked_lm_weights": jnp.asarray(weights),
        "sentence_labels": jnp.asarray(rng.integers(0, 2, (batch_size, 1)), jnp.int32),
    }


def test_gradient_accumulation_is_exact(boxed: Any, jitted: dict[str, Any]) -> None:
    model = AlbertForPreTraining(CONFIG)
    params = nn.unbox(boxed)
    batch = tiny_batch()

    def full_loss(p: Any, b: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits = model.apply({"params": p}, b["input_ids"], b["input_mask"], b["segment_ids"],
                             b["masked_lm_positions"], deterministic=True)
        return pretraining_loss(*logits, b)

    full_grad = jax.jit(jax.grad(full_loss, has_aux=True))
    want_grads, want_metrics = full_grad(params, batch)
    loss_fn = pretraining_loss_fn(model, deterministic=True)
    accumulate = jax.jit(optim.accumulate_gradients, static_argnums=(0, 3))
    tx, update = jitted["lamb"]

    def second_update(grads: Any) -> Any:  # step 0 has lr 0: compare the update of step 1
        return update(grads, update(grads, tx.init(params), params)[1], params)[0]

    want_update = second_update(want_grads)
    for n in (1, 2, 4):
        grads, metrics = accumulate(loss_fn, params, batch, n, jax.random.key(0))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), grads, want_grads)
        for key, value in want_metrics.items():
            np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-7, err_msg=f"{n} {key}")
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8), second_update(grads),
                     want_update)

    with pytest.raises(ValueError, match="divide the batch size"):
        optim.accumulate_gradients(loss_fn, params, batch, 3, jax.random.key(0))
