"""Image classification: a timm model, ImageFolder data with timm transforms, top-1/top-5."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_transform
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import default_collate

from ..checkpoint.pretrained import load_into, resolve
from ..data.augment import train_transform
from ..data.imagefolder import UNREADABLE, CheckedImageFolder
from ..errors import RecipeError
from ..recipe.root import Recipe
from .base import SCORE_DECIMALS, OnnxGraph, Task, create_timm_model

SAMPLE_CONTRACT = "(image, label): image a PIL image or a normalised float CHW tensor, label an int class index"
LOGITS_TOLERANCE = 1e-4


class PilCollate:
    """Batches `(image, label)` samples; PIL images first go through the recipe's transform.

    Datasets built from the recipe already yield tensors; a user's dataset may yield PIL images
    (as torchvision's do without a transform) and still train with the recipe's augmentation.
    """

    def __init__(self, transform: Callable, img_size: int) -> None:
        self.transform = transform
        self.img_size = img_size

    def __call__(self, batch: list) -> Any:
        samples = []
        for sample in batch:
            if not isinstance(sample, (tuple, list)) or len(sample) != 2:
                raise RecipeError(
                    f"classification dataset: a sample is {type(sample).__name__}; expected {SAMPLE_CONTRACT}"
                )
            image, label = sample
            if image is None and label == UNREADABLE:  # skipped (skip_bad_images): a blank the task leaves out
                image = torch.zeros(3, self.img_size, self.img_size)
            if isinstance(image, Image.Image):
                image = self.transform(image.convert("RGB"))
            if not isinstance(image, torch.Tensor) or not isinstance(label, (numbers.Integral, torch.Tensor)):
                raise RecipeError(
                    f"classification dataset: a sample is ({type(image).__name__}, {type(label).__name__}); "
                    f"expected {SAMPLE_CONTRACT}"
                )
            samples.append((image, label))
        return default_collate(samples)


class Normalized(nn.Module):
    """The classifier with timm's input normalisation in front, so the graph takes [0, 1] RGB."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


class ClassificationTask(Task):
    """Builds the parts of a classification run and computes its losses and metrics.

    top5 is reported only with more than 5 classes: with 5 or fewer it is 100 by definition.
    """

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.metric_keys = ("top1", "top5") if recipe.model.num_classes > 5 else ("top1",)
        aug = recipe.data.augment
        self.mixup = None
        if aug.mixup > 0 or aug.cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=aug.mixup,
                cutmix_alpha=aug.cutmix,
                label_smoothing=aug.label_smoothing,
                num_classes=recipe.model.num_classes,
            )
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.criterion = nn.CrossEntropyLoss(label_smoothing=aug.label_smoothing)
        self.reset_metrics()

    @property
    def full_train_batches(self) -> bool:
        """As in timm's train.py every training batch is full (an epoch's short last one is left
        out): a last batch of one sample stops BatchNorm wherever a feature map is 1x1 (32 px
        images), and timm's Mixup rejects an odd batch."""
        return True

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        kwargs = dict(num_classes=m.num_classes, drop_rate=m.drop_rate, drop_path_rate=m.drop_path_rate)
        source = resolve(m.backbone, m.pretrained)
        model = create_timm_model(source.name if source else m.backbone, pretrained=False, **kwargs)
        if source is not None:
            load_into(model, source, classifier=model.pretrained_cfg.get("classifier") or ())
        return model

    def transforms(self) -> tuple[Callable, Callable]:
        """The recipe's train and val transforms (timm's): PIL image -> normalised tensor."""
        d = self.recipe.data
        aug = d.augment
        train_tf = train_transform(  # timm's, safe for Pillow 13's posterize (see data/augment.py)
            d.img_size,
            scale=(aug.scale[0], aug.scale[1]),
            hflip=aug.hflip,
            color_jitter=aug.color_jitter,
            auto_augment=aug.auto_augment or None,
        )
        return train_tf, self.val_transform()

    def val_transform(self) -> Callable:
        d = self.recipe.data
        return create_transform(d.img_size, is_training=False, crop_pct=d.crop_pct)

    def build_loader(self, dataset, *, batch_size: int, train: bool):
        """A dataset of the user's may yield PIL images: they get the recipe's transforms (see PilCollate)."""
        from ..data.loader import build_loader

        collate = PilCollate(self.transforms()[0 if train else 1], self.recipe.data.img_size)
        return build_loader(
            dataset,
            self.recipe,
            batch_size=batch_size,
            train=train,
            collate_fn=collate,
            drop_last=train and self.full_train_batches,
        )

    def build_datasets(self) -> tuple[CheckedImageFolder, CheckedImageFolder]:
        train_tf, val_tf = self.transforms()
        train_root, val_root = self._roots()
        skip = self.recipe.data.skip_bad_images
        train = CheckedImageFolder(train_root, train_tf, skip_bad_images=skip, key="data.train.root")
        self.num_skipped_train = train.num_skipped
        val = CheckedImageFolder(val_root, val_tf, skip_bad_images=skip, key="data.val.root")
        self.announce_split("train", train)
        self.announce_split("val", val)
        return train, val

    def _roots(self) -> tuple[Path, Path]:
        d = self.recipe.data
        if d.type == "shapes":
            from ..data.shapes import ensure_shapes_classification

            return ensure_shapes_classification(self.shapes_spec())
        if d.type != "imagefolder":
            raise RecipeError(
                f'data.type = "{d.type}" is for detection; classification takes "imagefolder" or "shapes"'
            )
        return Path(d.splits("train")[0].root), Path(d.splits("val")[0].root)

    def _readable(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch without skipped samples (checked only with skip_bad_images: it costs a sync)."""
        if not self.recipe.data.skip_bad_images:
            return images, targets
        keep = targets != UNREADABLE
        return images[keep], targets[keep]

    def train_loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, targets = batch
        size = len(targets)
        images, targets = self._readable(images, targets)
        self.num_unreadable_train += size - len(targets)
        if self.mixup is not None and len(targets) % 2:
            images, targets = images[:-1], targets[:-1]  # Mixup pairs samples: an even batch
        if not len(targets) or (len(targets) == 1 and size > 1):
            # Every image of the batch was unreadable (or all but one, too few for BatchNorm):
            # a zero step keeps DDP in step.
            loss = sum(p.sum() for p in model.parameters()) * 0.0
            return loss, {"loss": loss.detach()}
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        loss = self.criterion(model(images), targets)
        return loss, {"loss": loss.detach()}

    def reset_metrics(self) -> None:
        self._parts: list[torch.Tensor] = []

    def val_step(self, model: nn.Module, batch, accelerator) -> torch.Tensor:
        """Per-sample loss and hits, gathered so every val sample counts exactly once; returns the logits."""
        images, targets = batch
        logits = model(images)
        valid = targets != UNREADABLE
        targets = targets.clamp(min=0)
        loss = F.cross_entropy(logits.float(), targets, reduction="none")
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(targets[:, None])
        per_sample = torch.stack([loss, hits[:, :1].any(1).float(), hits.any(1).float()], dim=1) * valid[:, None]
        per_sample = torch.cat([per_sample, valid[:, None].float()], dim=1)
        self._parts.append(accelerator.gather_for_metrics(per_sample).detach())
        return logits

    def compute_metrics(self) -> dict[str, float]:
        allv = torch.cat(self._parts) if self._parts else torch.zeros(0, 4)
        sums = allv.sum(0).tolist() if allv.shape[0] else [0.0, 0.0, 0.0, 0.0]
        n = int(sums[3])
        self._parts = []
        out: dict[str, float] = {
            "loss": sums[0] / max(n, 1),
            "num_samples": n,
            "top1": 100.0 * sums[1] / max(n, 1),
        }
        if "top5" in self.metric_keys:
            out["top5"] = 100.0 * sums[2] / max(n, 1)
        if self.recipe.data.skip_bad_images:
            out.update(self.skip_counts(allv.shape[0] - n))
        return out

    # ----------------------------------------------------------------- predict, export, visualize

    def input_size(self) -> int:
        return self.recipe.data.img_size

    def predict_batch(self, model: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Softmax probabilities, N x num_classes, on the CPU."""
        return model(torch.stack(list(inputs)).to(device)).float().softmax(dim=1).cpu()

    def prediction_records(
        self,
        outputs: torch.Tensor,
        files: Sequence[str | None],
        sizes: Sequence[tuple[int, int]],
        names: list[str],
        category_ids: list[int],
        *,
        topk: int,
        score_thresh: float | None,
    ) -> list[dict[str, Any]]:
        top = outputs.topk(min(topk, outputs.shape[1]), dim=1)
        return [
            {
                "file": f,
                "topk": [
                    {"label": names[i], "index": i, "score": round(p, SCORE_DECIMALS)}
                    for i, p in zip(idx.tolist(), val.tolist())
                ],
            }
            for f, idx, val in zip(files, top.indices, top.values)
        ]

    def backbone_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything but the classifier timm's pretrained config names."""
        head = timm.models.get_pretrained_cfg_value(self.recipe.model.backbone, "classifier") or "fc"
        heads = head if isinstance(head, (list, tuple)) else [head]
        return {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}

    def onnx_graph(self, model: nn.Module) -> OnnxGraph:
        """Input `images`, N x 3 x img_size x img_size in [0, 1] (dynamic batch), output `logits`."""
        size, crop_pct = self.recipe.data.img_size, self.recipe.data.crop_pct
        return OnnxGraph(
            module=Normalized(model).eval(),
            example=(torch.rand(2, 3, size, size),),
            names=dict(
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
            ),
            input=(
                f"images: float32 N x 3 x {size} x {size}, RGB in [0, 1] (normalised inside); preprocess as "
                f"timm's eval transform: resize the shorter side to {int(size / crop_pct)} "
                f"(bicubic), center crop {size}"
            ),
            output="logits: float32 N x num_classes (softmax for probabilities)",
            subject=f"model.backbone = {self.recipe.model.backbone!r}",
        )

    def onnx_difference(
        self, module: nn.Module, session: Any, inputs: list[torch.Tensor], path: Path, bar: Any
    ) -> tuple[float, float, str]:
        """Logits of the whole batch at once (the dynamic batch axis included)."""
        batch = torch.stack(inputs)
        diff = (torch.from_numpy(session.run(None, {"images": batch.numpy()})[0]) - module(batch)).abs().max().item()
        bar.update(len(inputs))
        return diff, LOGITS_TOLERANCE, "logits"

    def check_visualize(self) -> None:
        raise RecipeError(
            f'visualize draws boxes; {self.recipe.source} has model.task = {self.recipe.model.task!r}, not "detection"'
        )

    def draw_sample(self, image: torch.Tensor, target: Any, classes: list[str]) -> torch.Tensor:
        """The normalised tensor back in [0, 1] with timm's mean / std."""
        mean, std = (
            torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None],
            torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None],
        )
        return ((image * std + mean).clamp(0, 1) * 255).to(torch.uint8)
