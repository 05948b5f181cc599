"""Shared machinery of the ``transformers`` model workloads (vision and language).

Models are built from a configuration class with random weights (nothing is
downloaded) directly on the target device. Training is forward + loss,
backward, optimizer step (``zero_grad`` counts in the optimizer phase); fp16
training uses a ``GradScaler`` as real mixed-precision training does.
Inference runs under ``torch.inference_mode()`` with the model in ``eval()``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from migperf.bench.model_cache import cached_model
from migperf.bench.workloads.base import (
    PreparedWorkload,
    Workload,
    autocast_context,
    count_parameters,
    executed_precision,
    precision_note,
    recordable_config,
    split_model_args,
)

if TYPE_CHECKING:
    import torch

__all__ = ["ModelWorkload"]

# Bookkeeping keys of every transformers config; not something to override.
_META_KEYS = frozenset(
    {"transformers_version", "model_type", "architectures", "_name_or_path", "dtype", "torch_dtype"}
)


class ModelWorkload(Workload):
    """A ``transformers`` model with random weights and synthetic inputs.

    Subclasses set ``CONFIG_CLASS`` and ``MODEL_CLASS`` (names in the
    ``transformers`` namespace), ``CONFIG_DEFAULTS`` (what makes this variant,
    e.g. the depths of ResNet-18) and ``OPTIMIZER`` (``sgd`` or ``adamw``),
    and implement :meth:`make_inputs`.
    """

    CONFIG_CLASS: ClassVar[str]
    MODEL_CLASS: ClassVar[str]
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    OPTIMIZER: ClassVar[str] = "adamw"

    def build_config(self) -> tuple[Any, dict[str, Any]]:
        """The effective configuration and workload arguments.

        Raises:
            UsageError: For an unknown model argument or a value of the wrong type.
        """
        import transformers

        config_cls = getattr(transformers, self.CONFIG_CLASS)
        defaults = config_cls(**self.CONFIG_DEFAULTS).to_dict()
        for key in _META_KEYS:
            defaults.pop(key, None)
        wargs, overrides = split_model_args(
            self.NAME, self.spec.model_args, self.WORKLOAD_ARGS, defaults, self.CONFIG_CLASS
        )
        kwargs = {**self.CONFIG_DEFAULTS, **overrides, **self.config_kwargs(wargs)}
        return config_cls(**kwargs), wargs

    def config_kwargs(self, wargs: Mapping[str, Any]) -> dict[str, Any]:
        """Configuration keywords derived from workload arguments (``num_labels``...)."""
        return {"num_labels": wargs["num_labels"]} if "num_labels" in wargs else {}

    @abstractmethod
    def make_inputs(
        self, config: Any, wargs: Mapping[str, Any]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int | None]:
        """Synthetic inputs on the device: ``(model kwargs, labels, tokens per step or None)``.

        Raises:
            UsageError: When the inputs cannot fit the model (sequence too long).
        """

    def prepare(self) -> PreparedWorkload:
        """Build model, optimizer and inputs; return the timed step.

        Raises:
            UsageError: For an invalid model argument or input size.
        """
        import torch
        import transformers

        spec = self.spec
        torch.manual_seed(spec.seed)
        config, wargs = self.build_config()
        inputs, labels, tokens = self.make_inputs(config, wargs)
        model_cls = getattr(transformers, self.MODEL_CLASS)

        def build() -> Any:
            # Initialising on the device is much faster than on the host for large models.
            with torch.device(self.device):
                built = model_cls(config)
            return built.to(self.device)

        # A warm worker builds the model once for every run that shares it (batch sizes...).
        key = (self.NAME, config.to_json_string(use_diff=False), str(self.device))
        model = cached_model(key, build)
        params = count_parameters(model)
        precision = executed_precision(spec.precision, self.device)
        autocast = autocast_context(precision, self.device)
        notes: list[str] = [n for n in (precision_note(spec.precision, precision),) if n]

        if spec.task == "train":
            model.train()
            optimizer = self._optimizer(model)
        else:
            model.eval()
        runner: Callable[..., Any] = model
        if spec.compile:
            runner = torch.compile(model, backend=spec.compile_backend)
            notes.append(
                f"torch.compile(backend={spec.compile_backend!r}); compilation happens during warmup"
            )

        if spec.task == "infer":

            def infer_step(mark: Callable[[], None]) -> None:
                with torch.inference_mode(), autocast():
                    runner(**inputs)

            step = infer_step
            phases: tuple[str, ...] = ("forward",)
            infer_batch = _batch_runner(runner, inputs, autocast, self.device)
        else:
            scaler = None
            if precision == "fp16":
                scaler = torch.amp.GradScaler(self.device.type)
                notes.append(
                    "fp16 training uses torch.amp.GradScaler (in the backward and optimizer phases)"
                )

            def train_step(mark: Callable[[], None]) -> None:
                with autocast():
                    loss = runner(**inputs, labels=labels).loss
                mark()
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                mark()
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step = train_step
            phases = ("forward", "backward", "optimizer")
            infer_batch = None

        record = recordable_config(config)
        record.update({f"workload.{k}": v for k, v in wargs.items()})
        record["optimizer"] = self.OPTIMIZER if spec.task == "train" else None
        return PreparedWorkload(
            step=step,
            phases=phases,
            samples_per_step=spec.batch_size,
            tokens_per_step=tokens,
            parameter_count=params,
            config=record,
            notes=notes,
            infer_batch=infer_batch,
            precision=precision,
        )

    def _optimizer(self, model: Any) -> Any:
        import torch

        if self.OPTIMIZER == "sgd":
            # The torchvision ImageNet recipe for ResNet: SGD, momentum 0.9, weight decay 1e-4.
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        return torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)


def _batch_runner(
    runner: Callable[..., Any],
    inputs: Mapping[str, torch.Tensor],
    autocast: Callable[[], Any],
    device: torch.device,
) -> Callable[[Sequence[int]], None]:
    """Inference on the prepared samples at the given positions (a gather, then a forward pass)."""
    import torch

    def infer_batch(indices: Sequence[int]) -> None:
        # A pageable host tensor copied with non_blocking is staged at once, so
        # the copy neither waits for queued kernels nor races a later reuse.
        idx = torch.tensor(indices, dtype=torch.long).to(device, non_blocking=True)
        with torch.inference_mode(), autocast():
            runner(**{k: v.index_select(0, idx) for k, v in inputs.items()})

    return infer_batch
