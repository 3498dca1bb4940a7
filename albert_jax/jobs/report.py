"""End-of-run report: held-out accuracy next to simple baselines, training curves as a PNG, where things are.

Baselines: for MLM, always predicting the token most frequent among the *training* targets (so nothing is
learned from the held-out split); for the sentence task, always predicting the majority training label.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from albert_jax.input import loader as input_loader


def target_counts(input_config: input_loader.InputConfig, batches: int = 50, batch_size: int = 64,
                  split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(weighted counts of masked target ids, counts of sentence labels) over `batches` batches of a split."""
    loader = input_loader.make_loader(split=split, global_batch_size=batch_size, process_index=0, process_count=1,
                                      seed=12345, config=input_config)
    tokens: dict[int, float] = {}
    labels = np.zeros(2)
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        rows = batch["example_weights"] > 0
        ids, weights = batch["masked_lm_ids"][rows].ravel(), batch["masked_lm_weights"][rows].ravel()
        for token, weight in zip(ids.tolist(), weights.tolist()):
            tokens[token] = tokens.get(token, 0.0) + weight
        labels += np.bincount(batch["sentence_labels"][rows], minlength=2)[:2]
    loader.close()
    vocab = max(tokens) + 1 if tokens else 1
    counts = np.zeros(vocab)
    for token, weight in tokens.items():
        counts[token] = weight
    return counts, labels


def baselines(input_config: input_loader.InputConfig) -> dict[str, Any]:
    """Held-out accuracy of the constant predictors chosen on training data."""
    train_tokens, train_labels = target_counts(input_config, split="train")
    eval_tokens, eval_labels = target_counts(input_config, batches=10**9, split="eval")
    top = int(train_tokens.argmax())
    mlm = eval_tokens[top] / max(eval_tokens.sum(), 1.0) if top < eval_tokens.size else 0.0
    majority = int(train_labels.argmax())
    return {"mlm_most_frequent_token": top, "masked_lm_accuracy": float(mlm),
            "sentence_majority_label": majority,
            "sentence_order_accuracy": float(eval_labels[majority] / max(eval_labels.sum(), 1.0))}


def read_jsonl(path: str) -> list[dict[str, float]]:
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def plot_curves(workdir: str, title: str = "", baselines: dict[str, Any] | None = None) -> str:
    """Training loss and accuracies (and held-out points, and the baselines if given) -> WORKDIR/curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    held_out = read_jsonl(os.path.join(workdir, "eval", "eval.jsonl"))
    steps = [m["step"] for m in train]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("loss", "masked_lm_loss", "sentence_order_loss"), ("masked_lm_accuracy",), ("sentence_order_accuracy",))
    titles = ("losses", "MLM accuracy", "sentence-order accuracy")
    for ax, keys, name in zip(axes, panels, titles):
        for key in keys:
            ax.plot(steps, [m[key] for m in train], label=f"train {key}", linewidth=1)
            if held_out and key in held_out[0]:
                ax.plot([m["step"] for m in held_out], [m[key] for m in held_out], "o-",
                        label=f"held-out {key}")
        if baselines and keys[0] in baselines:
            ax.axhline(baselines[keys[0]], color="gray", linestyle="--", label="baseline (held-out)")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_report(workdir: str, held_out: dict[str, float], base: dict[str, Any], params: int,
                  tokens_per_s: float, seconds: float, gin_files: str) -> str:
    mlm, mlm_base = held_out["masked_lm_accuracy"], base["masked_lm_accuracy"]
    sop, sop_base = held_out["sentence_order_accuracy"], base["sentence_order_accuracy"]
    lines = [
        "",
        "=" * 72,
        f"albert-jax demo report ({params:,} parameters, {seconds / 60:.1f} min, {tokens_per_s:,.0f} tokens/s)",
        "-" * 72,
        f"held-out examples {int(held_out['examples']):,}, masked tokens {int(held_out['masked_tokens']):,}",
        f"{'':26s}{'model':>10s}{'baseline':>10s}   baseline",
        f"{'MLM accuracy':26s}{mlm:10.3f}{mlm_base:10.3f}   always the most frequent training target",
        f"{'sentence-order accuracy':26s}{sop:10.3f}{sop_base:10.3f}   majority training label (chance)",
        f"{'MLM loss':26s}{held_out['masked_lm_loss']:10.3f}",
        f"{'sentence-order loss':26s}{held_out['sentence_order_loss']:10.3f}{np.log(2):10.3f}   ln 2",
        "-" * 72,
        f"checkpoints   {os.path.join(workdir, 'checkpoints')}",
        f"TensorBoard   tensorboard --logdir {workdir}",
        f"curves        {os.path.join(workdir, 'curves.png')}",
        f"evaluate      python launch.py --mode=eval --workdir={workdir}",
        f"continue      python launch.py {gin_files} --workdir={workdir} --gin.NUM_TRAIN_STEPS=<more steps>",
        "=" * 72,
    ]
    return "\n".join(lines)
