"""Image classification workloads: ResNet-18/50/101 and ViT-Base, 224x224 by default.

Synthetic inputs: ``pixel_values`` drawn from a standard normal, labels
uniform over ``num_labels`` (1000, as ImageNet). ``image_size`` (a workload
argument) sets the input resolution for every model; ViT also takes it into
its configuration, since its position embeddings depend on it. Training uses
SGD with momentum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from migperf.bench.workloads.models import ModelWorkload
from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["ResNet18", "ResNet50", "ResNet101", "VisionWorkload", "VitBase"]


class VisionWorkload(ModelWorkload):
    """An image-classification model fed random images."""

    FAMILY: ClassVar[str] = "vision"
    OPTIMIZER: ClassVar[str] = "sgd"
    WORKLOAD_ARGS: ClassVar[Mapping[str, Any]] = {"image_size": 224, "num_labels": 1000}

    def make_inputs(
        self, config: Any, wargs: Mapping[str, Any]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int | None]:
        """Random images and labels on the device.

        Raises:
            UsageError: For a non-positive image size.
        """
        import torch

        size = int(wargs["image_size"])
        if size < 1:
            raise UsageError(f"model arg image_size={size} must be a positive number of pixels")
        b = self.spec.batch_size
        g = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        pixels = torch.randn(b, config.num_channels, size, size, generator=g).to(self.device)
        labels = torch.randint(0, config.num_labels, (b,), generator=g).to(self.device)
        return {"pixel_values": pixels}, labels, None


class _ResNet(VisionWorkload):
    CONFIG_CLASS: ClassVar[str] = "ResNetConfig"
    MODEL_CLASS: ClassVar[str] = "ResNetForImageClassification"


class ResNet18(_ResNet):
    """ResNet-18 (basic blocks, depths 2-2-2-2), as ``microsoft/resnet-18``."""

    NAME: ClassVar[str] = "resnet18"
    DESCRIPTION: ClassVar[str] = "ResNet-18 image classification (11.7 M parameters)"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "layer_type": "basic",
        "depths": [2, 2, 2, 2],
        "hidden_sizes": [64, 128, 256, 512],
        "embedding_size": 64,
    }


class ResNet34(_ResNet):
    """ResNet-34 (basic blocks, depths 3-4-6-3), as ``microsoft/resnet-34``."""

    NAME: ClassVar[str] = "resnet34"
    DESCRIPTION: ClassVar[str] = "ResNet-34 image classification (21.8 M parameters)"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "layer_type": "basic",
        "depths": [3, 4, 6, 3],
        "hidden_sizes": [64, 128, 256, 512],
        "embedding_size": 64,
    }


class ResNet50(_ResNet):
    """ResNet-50 (bottleneck blocks, depths 3-4-6-3), as ``microsoft/resnet-50``."""

    NAME: ClassVar[str] = "resnet50"
    DESCRIPTION: ClassVar[str] = "ResNet-50 image classification (25.6 M parameters)"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "layer_type": "bottleneck",
        "depths": [3, 4, 6, 3],
        "hidden_sizes": [256, 512, 1024, 2048],
        "embedding_size": 64,
    }


class ResNet101(_ResNet):
    """ResNet-101 (bottleneck blocks, depths 3-4-23-3), as ``microsoft/resnet-101``."""

    NAME: ClassVar[str] = "resnet101"
    DESCRIPTION: ClassVar[str] = "ResNet-101 image classification (44.5 M parameters)"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "layer_type": "bottleneck",
        "depths": [3, 4, 23, 3],
        "hidden_sizes": [256, 512, 1024, 2048],
        "embedding_size": 64,
    }


class VitBase(VisionWorkload):
    """ViT-Base/16 at 224x224, as ``google/vit-base-patch16-224``."""

    NAME: ClassVar[str] = "vit-base"
    DESCRIPTION: ClassVar[str] = "ViT-Base/16 image classification (86.6 M parameters)"
    CONFIG_CLASS: ClassVar[str] = "ViTConfig"
    MODEL_CLASS: ClassVar[str] = "ViTForImageClassification"
    CONFIG_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 16,
        "image_size": 224,
    }

    def config_kwargs(self, wargs: Mapping[str, Any]) -> dict[str, Any]:
        """ViT's configuration carries the image size (its position embeddings depend on it)."""
        return {**super().config_kwargs(wargs), "image_size": int(wargs["image_size"])}

    def build_config(self) -> tuple[Any, dict[str, Any]]:
        """As the base, but ``image_size`` is both a workload argument and a config field.

        Raises:
            UsageError: For an unknown model argument, a wrong type, or an image
                size that is not a multiple of the patch size.
        """
        config, wargs = super().build_config()
        if config.image_size % config.patch_size:
            raise UsageError(
                f"vit-base: image_size {config.image_size} is not a multiple of patch_size {config.patch_size}",
                hint="pick an image size divisible by the patch size, e.g. --model-arg image_size=32",
            )
        return config, wargs
