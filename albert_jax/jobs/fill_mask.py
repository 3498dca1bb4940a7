"""Fill-mask: the top-k tokens, with probabilities, that a pretrained model's MLM head predicts for each [MASK].

`albert-jax fill-mask --model DIR --text "the capital of france is [MASK] ." --top_k 5`

DIR is any model directory `pretrained.load_pretrained` accepts (`convert tf` / `convert hf import` output, a
pretraining workdir, a transformers directory, an unconverted TF release). The vocabulary is the SentencePiece
model found next to the weights (30k-clean.model, spiece.model, or the run's configured one) unless --vocab
names one. The text is split at each literal "[MASK]"; the pieces between are tokenized with the project's
tokenizer (the original normalization: lowercased, accents stripped) and the [MASK] id goes in between, so a
mask stands for whole pieces: "[MASK]ing" predicts a piece before a separately tokenized "ing".
Probabilities are the softmax of the MLM logits over the whole vocabulary at that position.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.jobs import flags
from albert_jax.input.tokenizer import CLS_ID, MASK_ID, SEP_ID, WORD_BOUNDARY, Tokenizer
from albert_jax.model import AlbertForPreTraining
from albert_jax.pretrained import Pretrained, PretrainedError, load_pretrained, model_tokenizer

if __name__ == "__main__":  # one entry for every job: the CLI
    from albert_jax.jobs import cli

    sys.exit(cli.main(["fill-mask", *sys.argv[1:]]))

MASK_TOKEN = "[MASK]"
EPILOG = flags.examples(
    "albert-jax fill-mask --model=converted/albert_base --text=\"the capital of france is [MASK] .\" --top_k=5",
    "albert-jax fill-mask --model=runs/demo --step=800 --text=\"a [MASK] is an ordered sequence.\" --json")
MLM_HEAD = ("mlm_dense", "mlm_layer_norm", "mlm_output_bias")


def encode_with_masks(tokenizer: Tokenizer, text: str) -> list[int]:
    """[CLS] + the text's ids with MASK_ID at each "[MASK]" + [SEP]."""
    parts = text.split(MASK_TOKEN)
    if len(parts) == 1:
        raise ValueError(f"the text has no {MASK_TOKEN}: write {MASK_TOKEN} (upper case) where a token is wanted")
    ids = [CLS_ID]
    for index, part in enumerate(parts):
        if part.strip():
            ids.extend(tokenizer.encode(part))
        if index < len(parts) - 1:
            ids.append(MASK_ID)
    return ids + [SEP_ID]


def readable(piece: str) -> str:
    """A piece as text: the word-boundary mark dropped ("▁paris" -> "paris")."""
    return piece.replace(WORD_BOUNDARY, " ").strip() or piece


def fill_mask(model: Pretrained, tokenizer: Tokenizer, text: str, top_k: int = 5) -> dict[str, Any]:
    """Top-k predictions at every [MASK] of `text`, and the text with every mask filled by its top-1 piece."""
    missing = [name for name in MLM_HEAD if name not in model.params]
    if missing:
        raise PretrainedError(f"{model.source} has no MLM head ({', '.join(missing)} missing): a fine-tuned "
                              "classifier cannot fill masks; use a pretrained model")
    config = model.config
    ids = encode_with_masks(tokenizer, text)
    if len(ids) > config.max_position_embeddings:
        raise ValueError(f"the text is {len(ids)} tokens with [CLS]/[SEP]; the model takes at most "
                         f"{config.max_position_embeddings}")
    if max(ids) >= config.vocab_size:
        raise PretrainedError(f"vocabulary {tokenizer.path} produced id {max(ids)} but the model has "
                              f"{config.vocab_size} embeddings: it is not this model's vocabulary (use --vocab)")
    positions = [index for index, token in enumerate(ids) if token == MASK_ID]
    input_ids = jnp.asarray([ids], jnp.int32)
    logits, _ = AlbertForPreTraining(config).apply(
        {"params": model.params}, input_ids, jnp.ones_like(input_ids), jnp.zeros_like(input_ids),
        jnp.asarray([positions], jnp.int32), deterministic=True)
    probabilities = np.asarray(jax.nn.softmax(logits[0].astype(jnp.float32), axis=-1))
    k = min(top_k, probabilities.shape[-1])
    masks, filled = [], list(ids)
    for position, row in zip(positions, probabilities):
        best = np.argsort(-row, kind="stable")[:k]
        masks.append({"position": position, "predictions": [
            {"token": readable(tokenizer.id_to_piece(i)), "piece": tokenizer.id_to_piece(i), "id": int(i),
             "probability": float(row[i])} for i in best]})
        filled[position] = int(best[0])
    return {"input_ids": ids, "masks": masks, "filled": tokenizer.decode(filled[1:-1])}


def format_result(result: dict[str, Any]) -> str:
    lines = []
    for number, mask in enumerate(result["masks"], start=1):
        lines.append(f"{MASK_TOKEN} {number} (token position {mask['position']}):")
        lines.extend(f"  {p['token']:<20} {p['probability']:.4f}" for p in mask["predictions"])
    lines.append(f"top-1 filled: {result['filled']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags.add_model(parser)
    parser.add_argument("--text", required=True, help='text with one or more [MASK], e.g. "paris is the [MASK] ."')
    parser.add_argument("--top_k", type=int, default=5, help="predictions shown per mask")
    flags.add_vocab(parser)
    flags.add_step(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """`albert-jax fill-mask`: loads the model, predicts, prints."""
    model = load_pretrained(args.model, args.step)
    result = fill_mask(model, model_tokenizer(model, args.vocab), args.text, args.top_k)
    print(json.dumps(result) if args.json else format_result(result))
    return 0
