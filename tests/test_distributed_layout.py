from __future__ import annotations

import timm
import torch

from accel_trainer.distributed import batch_to_channels_last, model_to_channels_last


def test_batch_to_channels_last_converts_only_image_batches():
    images, labels = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    out_images, out_labels = batch_to_channels_last((images, labels))
    assert out_images.is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out_images, images) and out_labels is labels
    nested = batch_to_channels_last([[torch.randn(3, 8, 8)], {"boxes": torch.zeros(1, 4)}])
    assert nested[0][0].shape == (3, 8, 8) and nested[1]["boxes"].shape == (1, 4)


def test_model_to_channels_last_converts_conv_weights():
    model = model_to_channels_last(timm.create_model("resnet10t", num_classes=2)).eval()
    assert model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
