"""Model arguments that shrink every workload to a few milliseconds per step on a CPU."""

from __future__ import annotations

from typing import Any

_BERT_LIKE = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 128,
}
_RESNET = {
    "image_size": 32,
    "embedding_size": 8,
    "hidden_sizes": [8, 16, 16, 16],
    "depths": [1, 1, 1, 1],
}

TINY: dict[str, dict[str, Any]] = {
    "resnet18": dict(_RESNET),
    "resnet34": dict(_RESNET),
    "resnet50": dict(_RESNET),
    "resnet101": dict(_RESNET),
    "vit-base": {
        "image_size": 32,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "bert-base": dict(_BERT_LIKE),
    "bert-large": dict(_BERT_LIKE),
    "minilm": dict(_BERT_LIKE),
    "mpnet": dict(_BERT_LIKE),
    "roberta-base": dict(_BERT_LIKE),
    "distilbert": {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64, "vocab_size": 128},
    "gemm": {"n": 32},
    "memcpy": {"size_mib": 0.25},
}

#: Stop rules for tests: a tenth of a second, a handful of iterations.
QUICK: dict[str, Any] = {
    "warmup_iterations": 1,
    "min_iterations": 3,
    "min_duration_s": 0.05,
    "max_duration_s": 5.0,
}
