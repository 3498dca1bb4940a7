"""Tests of the ALBERT model against independent expectations.

Where the expected values come from:
  * parameter counts: the hard-coded numbers of shared/reference/albert.md section 2 (not computed here);
  * numerics: `reference_forward` below, a float64 NumPy transcription of the post-LN ALBERT written from the
    reference's section 1 (not from albert_jax/model.py). It loops over layers in plain Python and picks weight
    copies with the reference's float rule int(i / L * G);
  * sharing / groups: an unshared model (sharing='none') whose per-layer weights are copied by hand from the
    shared model's unique copies, following the same float rule.
Big presets are only shape-evaluated (jax.eval_shape); real arrays are used for tiny configurations only, and
compiled forwards are cached per configuration, so the file costs about 50 s of CPU time on this machine class.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax.config import AlbertConfig, copy_index
from albert_jax.losses import pretraining_loss
from albert_jax.model import AlbertForPreTraining, AlbertModel, init_params

PRESET_DIR = Path(__file__).resolve().parents[1] / "experiments" / "models"

# Reference section 2: (encoder+pooler, +heads) for V=30000, 512 positions, 2 token types.
REFERENCE_PRESET_COUNTS: dict[str, tuple[int, int]] = {
    "albert_base": (11_683_584, 11_813_810),
    "albert_large": (17_683_968, 17_847_474),
    "albert_xlarge": (58_724_864, 59_021_490),
    "albert_xxlarge": (222_595_584, 223_158_450),
    "bert_base": (109_081_344, 109_705_010),
    "bert_large": (334_607_360, 335_691_058),
}

# Reference section 2, ALBERT-base shapes (H 768, L 12, FFN 3072): encoder+pooler by E and sharing.
REFERENCE_SHARING_GRID: dict[int, dict[str, int]] = {
    64: {"all": 9_681_408, "attention": 61_645_056, "ffn": 35_684_352, "none": 87_648_000},
    128: {"all": 11_683_584, "attention": 63_647_232, "ffn": 37_686_528, "none": 89_650_176},
    256: {"all": 15_687_936, "attention": 67_651_584, "ffn": 41_690_880, "none": 93_654_528},
    768: {"all": 31_114_752, "attention": 83_078_400, "ffn": 57_117_696, "none": 109_081_344},
}

# bf16 compute keeps 8 mantissa bits (relative rounding 2^-9 ~ 2e-3 per op). Through the embedding LN, six
# post-LN blocks, the pooler and the tied MLM decoder these errors accumulate roughly as a random walk: measured
# 0.5-1.8% relative (Frobenius) error of the MLM logits, pooled and sequence outputs over several seeds. 3% leaves
# headroom over that and stays far below what a wrong computation (a dropped LayerNorm, a wrong copy) gives, O(1).
# The 2-way sentence logits are not checked this way: four numbers near zero make a relative norm meaningless.
BF16_LOGITS_REL_TOL = 3e-2

# The shared model and the hand-built unshared one are bit-identical when every stack holds several copies (both
# index dynamically). A stack of one copy is read with a static slice instead, which compiles to a different XLA
# program whose sums may be reassociated (measured 1e-6): equal up to fp32 rounding then. A wrong copy pick moves
# outputs by O(0.1).
SAME_WEIGHTS_RTOL = 1e-5
SAME_WEIGHTS_ATOL = 1e-5

# fp32 model vs the float64 transcription: fp32 accumulation over widths <= 64 with O(1) activations.
FP32_ATOL = 2e-5
FP32_RTOL = 2e-5

ATTENTION_FAMILIES = ("query", "key", "value", "attention_output", "attention_layer_norm")
FFN_FAMILIES = ("ffn", "ffn_output", "ffn_layer_norm")

BATCH, LENGTH, PREDICTIONS = 2, 8, 3


def tiny_config(**overrides: Any) -> AlbertConfig:
    """A CPU-sized ALBERT (E != H so the embedding projection is exercised); fields override the defaults."""
    fields: dict[str, Any] = dict(vocab_size=97, embedding_size=16, hidden_size=32, num_hidden_layers=6,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)
    fields.update(overrides)
    return AlbertConfig(**fields)


def preset_config(name: str) -> AlbertConfig:
    """The AlbertConfig bound by experiments/models/<name>.gin."""
    gin.clear_config()
    try:
        gin.parse_config_file(str(PRESET_DIR / f"{name}.gin"))
        return AlbertConfig()
    finally:
        gin.clear_config()


def count(tree: Any) -> int:
    """Number of scalars in a (shape-only or real) parameter tree."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def param_shapes(config: AlbertConfig) -> Any:
    """Unboxed ShapeDtypeStructs of the pretraining model's parameters, without allocating them."""
    return nn.unbox(jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))))


def randomized(params: Any, seed: int) -> Any:
    """Replace every parameter (biases and LayerNorms included) by a random draw.

    Freshly initialized biases are zero and LayerNorm scales one, so they would not test bias/LN handling; random
    values also make the unique copies of a stack clearly different, so a wrong copy pick shows.
    """
    rng = np.random.default_rng(seed)

    def draw(path: tuple[Any, ...], leaf: Any) -> Any:
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        is_scale = getattr(path[-1], "key", None) == "scale"
        return jnp.asarray((1.0 + 0.2 * noise) if is_scale else 0.2 * noise, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, params)


def random_params(config: AlbertConfig, seed: int) -> Any:
    """Random parameters with the model's tree and shapes (shape-evaluated, so no eager init is paid)."""
    return randomized(param_shapes(config), seed)


def make_batch(config: AlbertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A padded batch: row 0 is full, row 1 has 5 real tokens; masked positions lie on real tokens."""
    rng = np.random.default_rng(seed)
    input_mask = np.ones((BATCH, LENGTH), np.int32)
    input_mask[1, 5:] = 0
    segment_ids = np.zeros((BATCH, LENGTH), np.int32)
    segment_ids[0, 4:] = 1
    segment_ids[1, 3:5] = 1
    return {
        "input_ids": rng.integers(5, config.vocab_size, (BATCH, LENGTH)).astype(np.int32) * input_mask,
        "input_mask": input_mask,
        "segment_ids": segment_ids,
        "masked_lm_positions": np.array([[1, 4, 6], [0, 2, 4]], np.int32),
        "masked_lm_ids": rng.integers(5, config.vocab_size, (BATCH, PREDICTIONS)).astype(np.int32),
        "masked_lm_weights": np.array([[1, 1, 1], [1, 1, 0]], np.float32),
        "sentence_labels": np.array([0, 1], np.int32),
    }


@functools.lru_cache(maxsize=None)
def compiled_forward(config: AlbertConfig, deterministic: bool) -> Callable[..., Any]:
    """A jitted AlbertForPreTraining forward per (config, deterministic), reused across tests to save compiles.

    It returns (MLM logits, sentence logits) and, captured from inside the same call, the return value of the
    `albert` submodule (sequence and pooled outputs), so every check runs through the model's own wiring.
    """
    model = AlbertForPreTraining(config)

    def forward(p: Any, b: dict[str, Any], r: dict[str, Any] | None) -> tuple[Any, Any]:
        return model.apply({"params": p}, b["input_ids"], b["input_mask"], b["segment_ids"],
                           b["masked_lm_positions"], deterministic, rngs=r,
                           capture_intermediates=lambda module, method: isinstance(module, AlbertModel)
                           and method == "__call__", mutable=["intermediates"])

    return jax.jit(forward)


def apply_model(config: AlbertConfig, params: Any, batch: dict[str, np.ndarray], deterministic: bool = True,
                rngs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Forward outputs as NumPy arrays: sequence, pooled, mlm, sentence (and the MLM logits' dtype)."""
    (mlm, sentence), state = compiled_forward(config, deterministic)(params, batch, rngs)
    ((sequence, pooled),) = state["intermediates"]["albert"]["__call__"]
    return {"sequence": np.asarray(sequence), "pooled": np.asarray(pooled), "mlm": np.asarray(mlm),
            "sentence": np.asarray(sentence), "mlm_dtype": mlm.dtype}


# ----------------------------------------------------------------------------------------------------------------
# Independent float64 transcription of ALBERT (reference section 1).
# ----------------------------------------------------------------------------------------------------------------

def ref_layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def ref_gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def ref_copy(layer: int, num_layers: int, num_groups: int, shared: bool) -> int:
    """Reference rule: a shared block of layer i is group int(i / L * G); an unshared block is layer i's own."""
    return int(layer / num_layers * num_groups) if shared else layer


def ref_shared(sharing: str) -> tuple[bool, bool]:
    """(attention shared within groups, FFN shared within groups) for a sharing mode (paper Table 4)."""
    return sharing in ("all", "attention"), sharing in ("all", "ffn")


def reference_forward(params: Any, batch: dict[str, np.ndarray], *, num_layers: int, num_groups: int,
                      sharing: str, num_heads: int) -> dict[str, np.ndarray]:
    """Post-LN ALBERT forward in float64 NumPy with a plain Python loop over layers.

    Returns the sequence output, pooled output, MLM logits at the masked positions and the sentence logits.
    """
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    emb, enc, layer = p["albert"]["embeddings"], p["albert"]["encoder"], p["albert"]["encoder"]["shared_layer"]
    ids, segments, mask = batch["input_ids"], batch["segment_ids"], batch["input_mask"]
    length = ids.shape[1]

    x = emb["word_embeddings"][ids] + emb["position_embeddings"][:length][None] + emb["token_type_embeddings"][segments]
    x = ref_layer_norm(x, emb["layer_norm"]["scale"], emb["layer_norm"]["bias"])
    embedding_size = x.shape[-1]
    hidden_size = layer["query"]["kernel"].shape[1]
    assert ("embedding_projection" in enc) == (embedding_size != hidden_size), "projection only when E != H"
    if embedding_size != hidden_size:
        x = x @ enc["embedding_projection"]["kernel"] + enc["embedding_projection"]["bias"]

    head_dim = hidden_size // num_heads
    additive_mask = (1.0 - mask[:, None, None, :]) * -10000.0  # [B, 1, 1, keys], as in the original
    attention_shared, ffn_shared = ref_shared(sharing)

    def dense(v: np.ndarray, family: str, copy: int) -> np.ndarray:
        kernel, bias = layer[family]["kernel"][copy], layer[family]["bias"][copy]
        fan_in = v.shape[-1]
        return v @ kernel.reshape(fan_in, -1) + bias.reshape(-1)

    def heads(v: np.ndarray) -> np.ndarray:
        return v.reshape(v.shape[0], v.shape[1], num_heads, head_dim).transpose(0, 2, 1, 3)

    for i in range(num_layers):
        a = ref_copy(i, num_layers, num_groups, attention_shared)
        f = ref_copy(i, num_layers, num_groups, ffn_shared)
        q, k, v = (heads(dense(x, name, a)) for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + additive_mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        ln = layer["attention_layer_norm"]
        x = ref_layer_norm(x + dense(context, "attention_output", a), ln["scale"][a], ln["bias"][a])
        ffn = dense(ref_gelu_tanh(dense(x, "ffn", f)), "ffn_output", f)
        ln = layer["ffn_layer_norm"]
        x = ref_layer_norm(x + ffn, ln["scale"][f], ln["bias"][f])

    pooler = p["albert"]["pooler"]
    pooled = np.tanh(x[:, 0] @ pooler["kernel"] + pooler["bias"])
    gathered = np.stack([x[b, batch["masked_lm_positions"][b]] for b in range(x.shape[0])])
    t = ref_gelu_tanh(gathered @ p["mlm_dense"]["kernel"] + p["mlm_dense"]["bias"])
    t = ref_layer_norm(t, p["mlm_layer_norm"]["scale"], p["mlm_layer_norm"]["bias"])
    mlm = t @ emb["word_embeddings"].T + p["mlm_output_bias"]
    sentence = pooled @ p["sentence_classifier"]["kernel"] + p["sentence_classifier"]["bias"]
    return {"sequence": x, "pooled": pooled, "mlm": mlm, "sentence": sentence}


def real_rows(array: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Sequence-output rows of real (unpadded) tokens, flattened to [tokens, H]."""
    return np.asarray(array)[batch["input_mask"].astype(bool)]


# ----------------------------------------------------------------------------------------------------------------
# Parameter counts (shape evaluation only).
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", sorted(REFERENCE_PRESET_COUNTS))
def test_preset_parameter_counts_match_reference(preset: str) -> None:
    shapes = param_shapes(preset_config(preset))
    encoder_pooler, with_heads = REFERENCE_PRESET_COUNTS[preset]
    assert count(shapes["albert"]) == encoder_pooler
    assert count(shapes) == with_heads


@pytest.mark.parametrize("embedding_size", sorted(REFERENCE_SHARING_GRID))
def test_embedding_size_by_sharing_grid_matches_reference(embedding_size: int) -> None:
    base = AlbertConfig(embedding_size=embedding_size)  # defaults are the ALBERT-base shape
    counts = {mode: count(param_shapes(base.replace(sharing=mode))["albert"]) for mode in ("all", "attention",
                                                                                           "ffn", "none")}
    assert counts == REFERENCE_SHARING_GRID[embedding_size]


def test_presets_bind_the_reference_architectures() -> None:
    """Reference section 1's table of released shapes (H, L, heads, FFN, E, sharing)."""
    expected = {
        "albert_base": (768, 12, 12, 3072, 128, "all"),
        "albert_large": (1024, 24, 16, 4096, 128, "all"),
        "albert_xlarge": (2048, 24, 16, 8192, 128, "all"),
        "albert_xxlarge": (4096, 12, 64, 16384, 128, "all"),
        "bert_base": (768, 12, 12, 3072, 768, "none"),
        "bert_large": (1024, 24, 16, 4096, 1024, "none"),
    }
    for name, shape in expected.items():
        c = preset_config(name)
        assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.embedding_size,
                c.sharing) == shape, name
        assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size, c.num_hidden_groups) == (30000, 512, 2, 1)
        assert c.layer_norm_eps == 1e-12 and c.hidden_act == "gelu_new"


# ----------------------------------------------------------------------------------------------------------------
# Numerics against the independent transcription.
# ----------------------------------------------------------------------------------------------------------------

# The last case multiplies every parameter by 0.003 so each LayerNorm sees inputs of variance ~1e-6: there an
# epsilon of 1e-6 (Flax's default) instead of 1e-12 changes outputs by tens of percent, which O(1) activations
# would hide (the eps term is then ~1e-6 relative, below the fp32 tolerance). Outputs then are ~1e-3, so the
# absolute tolerance shrinks with the scale: measured error 2e-9, an eps of 1e-6 in any one LayerNorm moves
# outputs by >1e-5, the tolerance is 6e-8.
SHARING_CASES = [
    pytest.param(dict(sharing="all", num_hidden_groups=1), 1.0, id="all-G1"),
    pytest.param(dict(sharing="all", num_hidden_groups=4), 1.0, id="all-G4"),
    pytest.param(dict(sharing="attention", num_hidden_groups=2), 1.0, id="attention-G2"),
    pytest.param(dict(sharing="ffn", num_hidden_groups=1), 1.0, id="ffn-G1"),
    pytest.param(dict(sharing="none", embedding_size=32), 1.0, id="none-E=H"),
    pytest.param(dict(sharing="all", num_hidden_groups=3), 0.003, id="all-G3-tiny-activations"),
]


@pytest.mark.parametrize("overrides,param_scale", SHARING_CASES)
def test_scan_matches_unrolled_float64_transcription(overrides: dict[str, Any], param_scale: float) -> None:
    config = tiny_config(**overrides)
    params = jax.tree_util.tree_map(lambda leaf: leaf * param_scale, random_params(config, seed=1))
    batch = make_batch(config)
    got = apply_model(config, params, batch)
    expected = reference_forward(params, batch, num_layers=config.num_hidden_layers,
                                 num_groups=config.num_hidden_groups, sharing=config.sharing,
                                 num_heads=config.num_attention_heads)
    # Padded rows are compared too: the reference computes them the same way (they attend to real keys only).
    for name in ("sequence", "pooled", "mlm", "sentence"):
        np.testing.assert_allclose(got[name], expected[name], rtol=FP32_RTOL, atol=FP32_ATOL * param_scale,
                                   err_msg=name)


def test_transcription_is_sensitive_to_the_copy_pick() -> None:
    """Guard for the test above: picking the wrong copy must move outputs far beyond the tolerance."""
    config = tiny_config(sharing="all", num_hidden_groups=2)
    params = random_params(config, seed=1)
    batch = make_batch(config)
    right = reference_forward(params, batch, num_layers=6, num_groups=2, sharing="all", num_heads=4)
    wrong = reference_forward(params, batch, num_layers=6, num_groups=1, sharing="all", num_heads=4)
    assert np.abs(right["sequence"] - wrong["sequence"]).max() > 1000 * FP32_ATOL


# ----------------------------------------------------------------------------------------------------------------
# Groups and partial sharing against a hand-built unshared model.
# ----------------------------------------------------------------------------------------------------------------

GROUP_CASES = [
    pytest.param("all", 2, id="all-G2"),
    pytest.param("all", 4, id="all-G4"),
    pytest.param("attention", 1, id="attention-G1"),
    pytest.param("attention", 3, id="attention-G3"),
    pytest.param("ffn", 2, id="ffn-G2"),
]


@pytest.mark.parametrize("sharing,groups", GROUP_CASES)
def test_groups_and_partial_sharing_equal_hand_built_unshared_model(sharing: str, groups: int) -> None:
    layers = 6
    shared_config = tiny_config(sharing=sharing, num_hidden_groups=groups, num_hidden_layers=layers)
    unshared_config = tiny_config(sharing="none", num_hidden_layers=layers)
    shared = random_params(shared_config, seed=2)

    attention_shared, ffn_shared = ref_shared(sharing)
    stack = shared["albert"]["encoder"]["shared_layer"]
    for family in ATTENTION_FAMILIES + FFN_FAMILIES:
        is_shared = attention_shared if family in ATTENTION_FAMILIES else ffn_shared
        for leaf in jax.tree_util.tree_leaves(stack[family]):
            assert leaf.shape[0] == (groups if is_shared else layers), family  # exactly the unique copies

    unshared_layer = {}
    for family in ATTENTION_FAMILIES + FFN_FAMILIES:
        is_shared = attention_shared if family in ATTENTION_FAMILIES else ffn_shared
        chosen = [ref_copy(i, layers, groups, is_shared) for i in range(layers)]
        unshared_layer[family] = {name: jnp.stack([value[c] for c in chosen]) for name, value in stack[family].items()}
    unshared = {**shared, "albert": {**shared["albert"], "encoder": {**shared["albert"]["encoder"],
                                                                        "shared_layer": unshared_layer}}}
    unshared_shapes = param_shapes(unshared_config)
    assert jax.tree_util.tree_map(lambda a: a.shape, unshared) == jax.tree_util.tree_map(lambda a: a.shape,
                                                                                         unshared_shapes)

    batch = make_batch(shared_config)
    got, want = apply_model(shared_config, shared, batch), apply_model(unshared_config, unshared, batch)
    for name in ("sequence", "pooled", "mlm", "sentence"):
        if groups > 1:  # both programs index their stacks dynamically: bit-identical
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=SAME_WEIGHTS_RTOL, atol=SAME_WEIGHTS_ATOL,
                                       err_msg=name)


def test_copy_index_follows_the_original_float_rule_for_groups() -> None:
    """Groups (G < L) use exactly the original's int(i / L * G), float artefacts included (e.g. L=22, G=21)."""
    for layers in range(1, 65):
        for groups in range(1, layers):
            assert [copy_index(i, groups, layers) for i in range(layers)] == \
                   [int(i / layers * groups) for i in range(layers)], (layers, groups)


def test_one_copy_per_layer_is_the_identity() -> None:
    """With as many copies as layers each layer owns its copy (the float form would give layer 15 of 22 copy 14)."""
    assert int(15 / 22 * 22) == 14
    for layers in range(1, 65):
        assert [copy_index(i, layers, layers) for i in range(layers)] == list(range(layers))


# ----------------------------------------------------------------------------------------------------------------
# Padding and masked positions.
# ----------------------------------------------------------------------------------------------------------------

def test_padded_token_ids_do_not_change_real_outputs() -> None:
    config = tiny_config(num_hidden_layers=3)
    params = random_params(config, seed=3)
    batch = make_batch(config)
    changed = dict(batch)
    pad = ~batch["input_mask"].astype(bool)
    assert pad.any()
    changed["input_ids"] = np.where(pad, np.arange(batch["input_ids"].size).reshape(pad.shape) % 90 + 7,
                                    batch["input_ids"]).astype(np.int32)
    changed["segment_ids"] = np.where(pad, 1, batch["segment_ids"]).astype(np.int32)

    a, b = apply_model(config, params, batch), apply_model(config, params, changed)
    np.testing.assert_allclose(real_rows(a["sequence"], batch), real_rows(b["sequence"], batch), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["pooled"], b["pooled"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["mlm"], b["mlm"], rtol=0, atol=1e-6)  # masked positions lie on real tokens
    # Sanity: the padded rows themselves did change, so the perturbation was real.
    assert np.abs(a["sequence"][pad] - b["sequence"][pad]).max() > 1e-2


def test_mlm_logits_depend_only_on_their_own_gathered_position() -> None:
    config = tiny_config(num_hidden_layers=2)
    params = random_params(config, seed=4)
    batch = make_batch(config)
    reordered = dict(batch, masked_lm_positions=np.array([[6, 2, 1], [4, 4, 0]], np.int32))
    mlm_a = apply_model(config, params, batch)["mlm"]
    mlm_b = apply_model(config, params, reordered)["mlm"]
    # Same position, different slot (and regardless of its neighbours) -> same logits.
    for (row, slot_a, slot_b) in [(0, 0, 2), (0, 2, 0), (1, 2, 0), (1, 2, 1), (1, 0, 2)]:
        assert batch["masked_lm_positions"][row, slot_a] == reordered["masked_lm_positions"][row, slot_b]
        np.testing.assert_allclose(mlm_a[row, slot_a], mlm_b[row, slot_b], rtol=0, atol=1e-6)
    # Different positions -> different logits (the gather really selects).
    assert np.abs(mlm_b[0, 0] - mlm_b[0, 1]).max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# Precision, dropout, remat.
# ----------------------------------------------------------------------------------------------------------------

def test_bf16_compute_stays_close_to_fp32() -> None:
    config = tiny_config()
    params = random_params(config, seed=5)
    batch = make_batch(config)
    fp32 = apply_model(config, params, batch)
    bf16 = config.replace(dtype="bfloat16", param_dtype="float32")
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(param_shapes(bf16)))
    half = apply_model(bf16, params, batch)
    assert half["mlm_dtype"] == jnp.bfloat16 and fp32["mlm_dtype"] == jnp.float32
    for name in ("mlm", "pooled", "sequence"):
        want = fp32[name].astype(np.float64)
        relative = np.linalg.norm(half[name].astype(np.float64) - want) / np.linalg.norm(want)
        assert 0.0 < relative < BF16_LOGITS_REL_TOL, (name, relative)  # > 0: bf16 really was used


def test_deterministic_forward_is_repeatable_and_ignores_rng() -> None:
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    params = random_params(config, seed=8)
    batch = make_batch(config)
    first = apply_model(config, params, batch, deterministic=True)
    second = apply_model(config, params, batch, deterministic=True, rngs={"dropout": jax.random.PRNGKey(9)})
    for name in ("sequence", "pooled", "mlm", "sentence"):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_dropout_depends_on_the_rng_key() -> None:
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    params = random_params(config, seed=8)
    batch = make_batch(config)
    clean = apply_model(config, params, batch)["sequence"]
    key_a = apply_model(config, params, batch, False, {"dropout": jax.random.PRNGKey(1)})["sequence"]
    again_a = apply_model(config, params, batch, False, {"dropout": jax.random.PRNGKey(1)})["sequence"]
    key_b = apply_model(config, params, batch, False, {"dropout": jax.random.PRNGKey(2)})["sequence"]
    np.testing.assert_array_equal(key_a, again_a)
    assert np.abs(key_a - key_b).max() > 1e-3
    assert np.abs(key_a - clean).max() > 1e-3


def test_dropout_masks_differ_per_scan_step() -> None:
    """Record the actual hidden-dropout masks of every scan step and check no two layers share one.

    A flax method interceptor wraps each `nn.Dropout.__call__` (also inside the scan body) and sends the zero
    pattern of its output to the host with an ordered debug callback, so the masks arrive in execution order:
    the embedding dropout, then per layer the attention-output and FFN-output dropouts. If the dropout rng were
    not split per scan step, every layer would draw the same masks.
    """
    layers = 4
    config = tiny_config(num_hidden_layers=layers, hidden_dropout_prob=0.5)
    params = random_params(config, seed=6)
    batch = make_batch(config)
    masks: list[np.ndarray] = []

    def record(next_fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            jax.debug.callback(lambda dropped: masks.append(np.asarray(dropped)), out == 0, ordered=True)
        return out

    fresh_forward = compiled_forward.__wrapped__(config, False)  # uncached: must be traced under the interceptor
    with nn.intercept_methods(record):
        jax.block_until_ready(fresh_forward(params, batch, {"dropout": jax.random.PRNGKey(3)}))
    jax.effects_barrier()

    assert len(masks) == 1 + 2 * layers
    per_layer = [masks[1 + 2 * i: 3 + 2 * i] for i in range(layers)]
    for i in range(layers):
        for mask in per_layer[i]:
            assert 0.3 < mask.mean() < 0.7  # a real rate-0.5 mask, not all-kept
        for j in range(i):
            for a, b in zip(per_layer[i], per_layer[j]):
                assert not np.array_equal(a, b), (i, j)


REMAT_CONFIG = tiny_config(num_hidden_layers=3, sharing="attention", num_hidden_groups=1)


@functools.lru_cache(maxsize=None)
def remat_loss_and_grads(policy: str) -> tuple[Any, Any]:
    """Pretraining loss and its parameter gradients of REMAT_CONFIG under a remat policy (same params, batch)."""
    config = REMAT_CONFIG.replace(remat_policy=policy)
    model = AlbertForPreTraining(config)
    params = random_params(REMAT_CONFIG, seed=7)
    batch = make_batch(config)

    def loss(p: Any) -> Any:
        mlm, sentence = model.apply({"params": p}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                                    batch["masked_lm_positions"], True)
        return pretraining_loss(mlm, sentence, batch)[0]

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("policy", ["full", "dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_remat_policies_match_no_remat(policy: str) -> None:
    base_loss, base_grads = remat_loss_and_grads("none")
    loss, grads = remat_loss_and_grads(policy)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-6, atol=0)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(base_grads)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(base_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Config validation.
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    (dict(hidden_size=100, num_attention_heads=12), r"hidden_size=100 is not divisible by num_attention_heads=12"),
    (dict(sharing="al"), r"sharing='al'.*did you mean 'all'"),
    (dict(remat_policy="dots"), r"remat_policy='dots'"),
    (dict(num_hidden_groups=13), r"num_hidden_groups=13 must be between 1 and num_hidden_layers=12"),
    (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob=1.0 must be in \[0, 1\)"),
    (dict(dtype="fp16"), r"dtype='fp16'"),
])
def test_invalid_config_raises_helpful_value_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlbertConfig(**overrides)


def test_scan_unroll_changes_nothing_but_the_loop() -> None:
    """scan_unroll only changes how many layers one loop iteration runs, never the numbers."""
    base = AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=16, sharing="ffn")
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 8), 5, 64)
    positions = jnp.asarray([[1, 2], [3, 4]])
    params = init_params(base, jax.random.PRNGKey(0))
    outputs = [AlbertForPreTraining(base.replace(scan_unroll=unroll)).apply(
        {"params": params}, ids, jnp.ones_like(ids), jnp.zeros_like(ids), positions) for unroll in (1, 2, 4)]
    for other in outputs[1:]:
        for got, want in zip(other, outputs[0]):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_fused_projections_equal_the_separate_dense_layers() -> None:
    """One matmul against the stacked query/key/value kernels gives each projection's own output (per copy)."""
    from albert_jax.model import StackedDense, fused_projections

    cfg = AlbertConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=4, num_hidden_groups=2,
                       intermediate_size=32, embedding_size=8, vocab_size=50)

    class Projections(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, layer: jax.Array) -> tuple[Any, Any]:
            denses = tuple(StackedDense((16,), (2, 8), 2, ("hidden", "heads", "kv"), ("heads", "kv"), cfg,
                                        name=name) for name in ("query", "key", "value"))
            return fused_projections(x, denses, layer), tuple(dense(x, layer) for dense in denses)

    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 16))
    module = Projections()
    variables = module.init(jax.random.PRNGKey(0), x, jnp.int32(0))
    variables = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), variables)
    for layer in range(4):  # layers 0-1 use copy 0, layers 2-3 copy 1
        fused, separate = module.apply(variables, x, jnp.int32(layer))
        for a, b in zip(fused, separate):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    fused0, _ = module.apply(variables, x, jnp.int32(0))
    fused3, _ = module.apply(variables, x, jnp.int32(3))
    assert not np.allclose(fused0[0], fused3[0])  # the copy pick matters
