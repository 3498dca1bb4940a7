"""transformers references for the QA and multiple-choice heads, run in a separate (spawned) process.

Imports only numpy, torch and transformers: the pytest process never imports torch. Arrays in and out are numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import transformers

CLASSES = {"qa": "AlbertForQuestionAnswering", "mc": "AlbertForMultipleChoice"}


def _outputs(model: Any, kind: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        result = model(input_ids=torch.as_tensor(inputs["input_ids"], dtype=torch.long),
                       attention_mask=torch.as_tensor(inputs["input_mask"], dtype=torch.long),
                       token_type_ids=torch.as_tensor(inputs["segment_ids"], dtype=torch.long))
    if kind == "qa":
        return {"start_logits": result.start_logits.numpy(), "end_logits": result.end_logits.numpy()}
    return {"logits": result.logits.numpy()}


def random_model(kind: str, config: dict[str, Any], seed: int, hf_dir: str,
                 inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A transformers QA ('qa') or multiple-choice ('mc') ALBERT with every tensor random (LayerNorm scales in
    [0.5, 1.5], the rest normal(0, 0.1)), saved to `hf_dir` with save_pretrained; its outputs on `inputs`."""
    torch.manual_seed(seed)
    hf_config = transformers.AlbertConfig(**config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                          classifier_dropout_prob=0.0, attn_implementation="eager")
    model = getattr(transformers, CLASSES[kind])(hf_config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.1)
    model.save_pretrained(hf_dir)
    return _outputs(model, kind, inputs)


def saved_model(kind: str, hf_dir: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs on `inputs` of the model `from_pretrained` loads from `hf_dir` (an export of this project), with
    the missing and unexpected tensor names transformers reports."""
    model, info = getattr(transformers, CLASSES[kind]).from_pretrained(hf_dir, output_loading_info=True,
                                                                       attn_implementation="eager")
    model.eval()
    outputs = _outputs(model, kind, inputs)
    outputs["missing"] = sorted(info["missing_keys"])
    outputs["unexpected"] = sorted(info["unexpected_keys"])
    return outputs
