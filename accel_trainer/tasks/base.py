"""What the trainer asks of a task; the parts every task shares live here once.

The trainer calls, in order::

    model = task.build_model()
    train_set, val_set = task.build_datasets()
    loader = task.build_loader(train_set, batch_size=..., train=True)
    for batch in loader:                      # train phase
        loss, logged = task.train_loss(model, batch)
    task.reset_metrics()                      # val phase
    for batch in val_loader:
        task.val_step(model, batch, accelerator)
    metrics = task.compute_metrics()          # {"loss", "num_samples", *metric_keys}

Predict, export and visualize ask the task what differs between tasks instead of testing its name:
the val preprocessing (`val_transform`), model outputs and their records (`predict_batch`,
`prediction_records`), the trunk's weights (`backbone_weights`), the ONNX graph and its check
(`onnx_graph`, `onnx_difference`) and the pictures (`draw_sample`, `draw_prediction`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.shapes import ShapesSpec
from ..errors import RecipeError
from ..recipe.root import Recipe

logger = logging.getLogger(__name__)

# Prediction records round to what the numbers mean: a hundredth of a pixel, a score to 1e-4.
PIXEL_DECIMALS = 2
SCORE_DECIMALS = 4


def create_timm_model(name: str, **kwargs: Any) -> nn.Module:
    """`timm.create_model`, with an unknown name reported as the recipe's `model.backbone`."""
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise RecipeError(f"model.backbone = {name!r} is not a timm model ({exc})") from None
        raise


@dataclass
class OnnxGraph:
    """What `export --out FILE.onnx` traces for a task, and the contract written into the file."""

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    # torch.onnx.export's input_names, output_names and (optionally) dynamic_shapes.
    names: dict[str, Any]
    input: str
    output: str
    # The part of the recipe a failed export names ("cannot export <subject> to ONNX").
    subject: str


class Task:
    """Base of the classification and detection tasks: one instance per run."""

    metric_keys: tuple[str, ...] = ()
    # The recipe key under data.train / data.val that names a split's data, for messages.
    data_key = "root"
    collate_fn: Callable | None = None

    # Every training batch full: an epoch's short last batch is left out (val batches never are).
    @property
    def full_train_batches(self) -> bool:
        return False

    # Added to a dataset's labels inside the model (Faster R-CNN keeps 0 for the background).
    label_offset = 0

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        # With data.skip_bad_images: images the datasets left out up front, and training images
        # found unreadable while loading (counted by this process).
        self.num_skipped_train = 0
        self.num_skipped_val = 0
        self.num_unreadable_train = 0

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def build_loader(self, dataset: Dataset, *, batch_size: int, train: bool) -> DataLoader:
        from ..data.loader import build_loader

        return build_loader(
            dataset,
            self.recipe,
            batch_size=batch_size,
            train=train,
            collate_fn=self.collate_fn,
            drop_last=train and self.full_train_batches,
        )

    def bind_val_dataset(self, dataset: Dataset) -> None:
        """The val set the run evaluates (the recipe's or the user's); tasks that score against it keep
        it. The images it left out up front (`num_skipped`) count in the val records."""
        self.num_skipped_val = getattr(dataset, "num_skipped", 0)

    def train_loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to back-propagate and the detached values to log."""
        raise NotImplementedError

    def reset_metrics(self) -> None:
        raise NotImplementedError

    def val_step(self, model: nn.Module, batch, accelerator) -> Any:
        """Accumulate one val batch (every process calls it, each sample must count once) and
        return this process's outputs for it, which hooks see as `trainer.outputs`."""
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, float]:
        raise NotImplementedError

    def skip_counts(self, val_unreadable: int) -> dict[str, int]:
        """What a val record reports with `data.skip_bad_images`: val images left out of this
        evaluation, and training images left out so far (up front, plus unreadable in any process).
        Every process calls it (the unreadable counts are gathered)."""
        from accelerate import PartialState
        from accelerate.utils import gather_object

        unreadable = self.num_unreadable_train
        if PartialState().num_processes > 1:
            unreadable = sum(gather_object([unreadable]))
        return {
            "skipped_val_images": self.num_skipped_val + val_unreadable,
            "skipped_train_images": self.num_skipped_train + unreadable,
        }

    # ----------------------------------------------------------------- predict, export, visualize

    def val_transform(self) -> Callable:
        """PIL image -> model input, as evaluation preprocesses a val image."""
        raise NotImplementedError

    def input_size(self) -> int:
        """Side of a square model input, for made-up inputs (the export check without val data)."""
        raise NotImplementedError

    def predict_batch(self, model: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device) -> Any:
        """The eval-mode model's outputs for a batch of `val_transform` inputs."""
        raise NotImplementedError

    def prediction_records(
        self,
        outputs: Any,
        files: Sequence[str | None],
        sizes: Sequence[tuple[int, int]],
        names: list[str],
        category_ids: list[int],
        *,
        topk: int,
        score_thresh: float | None,
    ) -> list[dict[str, Any]]:
        """`predict_batch`'s outputs as one plain record per image (the formats: `predict.py`)."""
        raise NotImplementedError

    def backbone_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The timm trunk's weights of a model state dict, under timm's own key names."""
        raise NotImplementedError

    def onnx_graph(self, model: nn.Module) -> OnnxGraph:
        """The module `export` traces to ONNX, with its example input and contract."""
        raise NotImplementedError

    def onnx_difference(
        self, module: nn.Module, session: Any, inputs: list[torch.Tensor], path: Path, bar: Any
    ) -> tuple[float, float, str]:
        """onnxruntime's `session` against `module` on `inputs` (`val_transform`'s): the max abs
        difference, its tolerance and its unit; `bar` advances per image compared."""
        raise NotImplementedError

    def check_visualize(self) -> None:
        """Refuse `visualize` before anything is built when the task has no predictions to draw."""
        raise NotImplementedError

    def draw_prediction(
        self, model: nn.Module, image: torch.Tensor, truth: Any, classes: list[str], score_thresh: float
    ) -> torch.Tensor:
        """A val image with its truth and the eval-mode model's predictions, as a uint8 CHW picture."""
        raise NotImplementedError

    def draw_sample(self, image: torch.Tensor, target: Any, classes: list[str]) -> torch.Tensor:
        """A training sample as the loader makes it, as a uint8 CHW picture."""
        raise NotImplementedError

    # ----------------------------------------------------------------- shared

    @staticmethod
    def num_dataset_classes(dataset) -> int | None:
        """Number of classes a dataset declares (`classes`); None when it does not say."""
        classes = getattr(dataset, "classes", None)
        return None if classes is None else len(classes)

    def shapes_spec(self) -> ShapesSpec:
        """The built-in synthetic set the recipe's `[data.shapes]` describes."""
        s = self.recipe.data.shapes
        return ShapesSpec(num_train=s.num_train, num_val=s.num_val, image_size=s.image_size, seed=s.seed)

    def announce_split(self, split: str, dataset: Any) -> None:
        """One log line per split built from the recipe: how many images and classes, from where."""
        classes = self.num_dataset_classes(dataset)
        found = f"{len(dataset)} images" + (f", {classes} classes" if classes is not None else "")
        logger.info("%s: %s from %s", split, found, self.describe_data(split))

    def describe_data(self, split: str) -> str:
        """Where a split's data comes from, as the recipe names it."""
        if self.recipe.data.type == "shapes":
            return "built-in shapes data"
        return f"data.{split}.{self.data_key} = {getattr(getattr(self.recipe.data, split), self.data_key)}"
