"""Sequence classification workloads: BERT-Base/Large, DistilBERT, MiniLM, MPNet, RoBERTa-Base.

Synthetic inputs: ``input_ids`` uniform over the vocabulary (special ids 0-2
excluded, so no token is read as padding), a full ``attention_mask``, labels
uniform over ``num_labels`` (2). Every sequence has exactly ``seq_len``
tokens, so tokens per step is ``batch_size * seq_len``. Training uses AdamW.
Model arguments are the configuration class's own field names
(``num_hidden_layers`` for BERT, ``n_layers`` for DistilBERT).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from migperf.bench.workloads.models import ModelWorkload
from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BertBase",
    "BertLarge",
    "DistilBert",
    "LanguageWorkload",
    "MiniLM",
    "MPNet",
    "RobertaBase",
]

_FIRST_ORDINARY_TOKEN = 3


class LanguageWorkload(ModelWorkload):
    """A sequence-classification model fed random token ids."""

    FAMILY: ClassVar[str] = "language"
    OPTIMIZER: ClassVar[str] = "adamw"
    WORKLOAD_ARGS: ClassVar[Mapping[str, Any]] = {"num_labels": 2}
    #: Positions lost to the padding offset (RoBERTa-style position ids start at pad_token_id + 1).
    PADDING_OFFSET_POSITIONS: ClassVar[bool] = False

    def max_seq_len(self, config: Any) -> int:
        """The longest sequence the configuration's position embeddings allow."""
        limit = int(config.max_position_embeddings)
        if self.PADDING_OFFSET_POSITIONS:
            limit -= int(config.pad_token_id) + 1
        return limit

    def make_inputs(
        self, config: Any, wargs: Mapping[str, Any]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int | None]:
        """Random token ids, a full attention mask and labels on the device.

        Raises:
            UsageError: When ``seq_len`` exceeds the position embeddings.
        """
        import torch

        seq_len = self.spec.seq_len
        limit = self.max_seq_len(config)
        if seq_len > limit:
            needed = seq_len + int(config.max_position_embeddings) - limit
            raise UsageError(
                f"{self.NAME}: seq_len {seq_len} exceeds the {limit} positions the model supports "
                f"(max_position_embeddings={config.max_position_embeddings})",
                hint=f"use --seq-len {limit} or less, or raise it with "
                f"--model-arg max_position_embeddings={needed}",
            )
        vocab = int(config.vocab_size)
        if vocab <= _FIRST_ORDINARY_TOKEN:
            raise UsageError(f"{self.NAME}: vocab_size {vocab} is too small for synthetic tokens")
        b = self.spec.batch_size
        g = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        ids = torch.randint(_FIRST_ORDINARY_TOKEN, vocab, (b, seq_len), generator=g)
        labels = torch.randint(0, config.num_labels, (b,), generator=g)
        inputs = {
            "input_ids": ids.to(self.device),
            "attention_mask": torch.ones(b, seq_len, dtype=torch.long).to(self.device),
        }
        return inputs, labels.to(self.device), b * seq_len


class BertBase(LanguageWorkload):
    """BERT-Base (12 layers, hidden 768), as ``bert-base-uncased``."""

    NAME: ClassVar[str] = "bert-base"
    DESCRIPTION: ClassVar[str] = "BERT-Base sequence classification (110 M parameters)"
    CONFIG_CLASS: ClassVar[str] = "BertConfig"
    MODEL_CLASS: ClassVar[str] = "BertForSequenceClassification"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    }


class BertLarge(BertBase):
    """BERT-Large (24 layers, hidden 1024), as ``bert-large-uncased``."""

    NAME: ClassVar[str] = "bert-large"
    DESCRIPTION: ClassVar[str] = "BERT-Large sequence classification (335 M parameters)"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 30522,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "max_position_embeddings": 512,
    }


class MiniLM(BertBase):
    """MiniLM-L12-H384 (a BERT with 12 layers, hidden 384), as ``microsoft/MiniLM-L12-H384-uncased``."""

    NAME: ClassVar[str] = "minilm"
    DESCRIPTION: ClassVar[str] = "MiniLM-L12-H384 sequence classification (33 M parameters)"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 30522,
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
    }


class DistilBert(LanguageWorkload):
    """DistilBERT-Base (6 layers, dim 768), as ``distilbert-base-uncased``."""

    NAME: ClassVar[str] = "distilbert"
    DESCRIPTION: ClassVar[str] = "DistilBERT-Base sequence classification (67 M parameters)"
    CONFIG_CLASS: ClassVar[str] = "DistilBertConfig"
    MODEL_CLASS: ClassVar[str] = "DistilBertForSequenceClassification"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 30522,
        "dim": 768,
        "n_layers": 6,
        "n_heads": 12,
        "hidden_dim": 3072,
        "max_position_embeddings": 512,
    }


class MPNet(LanguageWorkload):
    """MPNet-Base (12 layers, hidden 768), as ``microsoft/mpnet-base``."""

    NAME: ClassVar[str] = "mpnet"
    DESCRIPTION: ClassVar[str] = "MPNet-Base sequence classification (110 M parameters)"
    CONFIG_CLASS: ClassVar[str] = "MPNetConfig"
    MODEL_CLASS: ClassVar[str] = "MPNetForSequenceClassification"
    PADDING_OFFSET_POSITIONS: ClassVar[bool] = True
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 30527,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 514,
        "pad_token_id": 1,
    }


class RobertaBase(LanguageWorkload):
    """RoBERTa-Base (12 layers, hidden 768, BPE vocabulary of 50265), as ``roberta-base``."""

    NAME: ClassVar[str] = "roberta-base"
    DESCRIPTION: ClassVar[str] = "RoBERTa-Base sequence classification (125 M parameters)"
    CONFIG_CLASS: ClassVar[str] = "RobertaConfig"
    MODEL_CLASS: ClassVar[str] = "RobertaForSequenceClassification"
    PADDING_OFFSET_POSITIONS: ClassVar[bool] = True
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "vocab_size": 50265,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
