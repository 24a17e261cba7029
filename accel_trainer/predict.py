"""Run a trained model on new images: the recipe says how to build and preprocess, the checkpoint
gives the weights and class names, and each image becomes one plain record.

Classification records: `{"file", "topk": [{"label", "index", "score"}, ...]}` (softmax
probabilities). Detection records: `{"file", "width", "height", "boxes" (xyxy, original pixels),
"labels", "category_ids", "scores"}`. Preprocessing is the val pipeline of the recipe, so a
prediction on a val image is what evaluation scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2.functional import to_pil_image

from .checkpoint.format import RECIPE, load_extra_tensors, read_recipe_text, read_trainer_state
from .checkpoint.weights import load_exactly, load_weights
from .classes import resolve_classes
from .data.images import read_rgb
from .errors import RecipeError, naming_file
from .recipe.reading import tomllib
from .recipe.root import Recipe
from .recipe.task_keys import drop_unused

ImageInput = str | Path | Image.Image | torch.Tensor


def checkpoint_recipe(path: str | Path) -> Recipe:
    """The recipe saved in a checkpoint folder, set to build the bare model (no pretrained download).

    A timm tag in `model.pretrained` becomes the backbone name, so the model keeps that tag's
    pretrained config (its normalisation) without fetching the weights again.
    """
    from .checkpoint.pretrained import resolve

    data = tomllib.loads(read_recipe_text(path))
    model = data.setdefault("model", {})
    source = resolve(model.get("backbone", "resnest50d"), model.get("pretrained", ""))
    if source is not None and source.kind == "hub" and "." in source.name:
        model["backbone"] = source.name
    model["pretrained"] = False
    # Checkpoints written before keys became per task hold the other task's keys too.
    saved = Path(path) / RECIPE
    with naming_file(saved):
        return Recipe.from_dict(drop_unused(data), source=str(saved), check_files=False)


def _open(image: ImageInput) -> tuple[Image.Image, str | None]:
    """An RGB PIL image and its file name; tensors are CHW RGB, float in [0, 1] or uint8."""
    if isinstance(image, (str, Path)):
        return read_rgb(image), str(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB"), getattr(image, "filename", None) or None
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a CHW RGB tensor, got shape {tuple(image.shape)}")
        return to_pil_image(image.cpu()), None
    raise TypeError(f"expected a path, PIL image or tensor, got {type(image).__name__}")


class Predictor:
    """A model in eval mode with its recipe's val preprocessing and its class names."""

    def __init__(
        self, recipe: Recipe, model: nn.Module, classes: dict[str, list], device: str | torch.device | None = None
    ) -> None:
        from .tasks import build_task

        self.recipe = recipe
        self.task = build_task(recipe)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.names: list[str] = classes["names"]
        self.category_ids: list[int] = classes["category_ids"]
        self.transform = self.task.val_transform()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        ema: bool = False,
        device: str | torch.device | None = None,
        model: nn.Module | None = None,
    ) -> Predictor:
        """Build the checkpoint's model from its recipe.toml (or take `model`: the model of your own
        it was trained with, `Trainer(recipe, model=...)`) and load its (EMA) weights and class names."""
        from .tasks import build_task

        path = Path(path)
        recipe = checkpoint_recipe(path)
        if model is None:
            model = build_task(recipe).build_model()
            hint = (
                f"the model was built from its recipe.toml (model.backbone = {recipe.model.backbone!r}). A checkpoint "
                "of a model of your own (Trainer(recipe, model=...)) loads in Python with that model: "
                f"Predictor.from_checkpoint({str(path)!r}, model=your_model)"
            )
        else:
            hint = "pass the model the checkpoint was trained with"
        if ema:
            state = load_extra_tensors(path, "ema")
            if state is None:
                raise RecipeError(f"{path}: has no EMA weights (ema.safetensors); train with [ema] enable = true")
        else:
            state = load_weights(path)
        load_exactly(model, state, source=path, hint=hint)
        saved = (read_trainer_state(path) or {}).get("classes")
        return cls(recipe, model, resolve_classes(saved, recipe.model.num_classes, str(path)), device)

    def preprocess(self, image: ImageInput) -> tuple[torch.Tensor, str | None, tuple[int, int]]:
        """The model input for one image, its file name and its original (width, height)."""
        pil, name = _open(image)
        return self.transform(pil), name, pil.size

    @torch.no_grad()
    def predict_tensors(
        self,
        inputs: Sequence[torch.Tensor],
        files: Sequence[str | None],
        sizes: Sequence[tuple[int, int]],
        *,
        topk: int = 5,
        score_thresh: float | None = None,
    ) -> list[dict[str, Any]]:
        """Records for already preprocessed images (what `preprocess` returns), one batch."""
        outputs = self.task.predict_batch(self.model, inputs, self.device)
        return self.task.prediction_records(
            outputs, files, sizes, self.names, self.category_ids, topk=topk, score_thresh=score_thresh
        )

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        topk: int = 5,
        score_thresh: float | None = None,
    ) -> list[dict[str, Any]]:
        """One record per image, in order; `images` are paths, PIL images or CHW RGB tensors."""
        batch_size = batch_size or self.recipe.data.batch_size
        records: list[dict[str, Any]] = []
        for start in range(0, len(images), batch_size):
            prepared = [self.preprocess(image) for image in images[start : start + batch_size]]
            inputs, files, sizes = zip(*prepared)
            records.extend(self.predict_tensors(inputs, files, sizes, topk=topk, score_thresh=score_thresh))
        return records
