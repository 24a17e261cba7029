"""`visualize`: one PNG per val image with the true boxes (green) and predictions (red)."""

from __future__ import annotations

import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms.v2.functional import pil_to_tensor

from accel_trainer import load_recipe
from accel_trainer.cli import main
from accel_trainer.tasks import build_task
from accel_trainer.tasks.drawing import draw_boxes

from .helpers.recipes import det_recipe


def count_colour(image: torch.Tensor, rgb: tuple[int, int, int]) -> int:
    return int((image == torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1)).all(0).sum())


def test_draws_truth_and_predictions_in_their_colours():
    image = torch.zeros(3, 40, 40)
    truth = {"boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    detections = {
        "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 39.0, 39.0]]),
        "labels": torch.tensor([0, 1]),
        "scores": torch.tensor([0.9, 0.1]),
    }
    canvas = draw_boxes(image, truth, detections, ["circle", "square"], score_thresh=0.5)
    assert canvas.dtype == torch.uint8 and canvas.shape == (3, 40, 40)
    assert count_colour(canvas, (0, 255, 0)) > 0 and count_colour(canvas, (255, 0, 0)) > 0
    # The low-scoring detection along the border is hidden.
    assert count_colour(canvas[:, :, 39:], (255, 0, 0)) == 0


def test_command_writes_one_png_per_val_image(tmp_path):
    recipe_path = det_recipe(tmp_path)
    model = build_task(load_recipe(recipe_path)).build_model()
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "vis"
    assert main(["visualize", str(recipe_path), "--checkpoint", str(weights), "--out", str(out), "--num", "4"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4
    with Image.open(pngs[0]) as png:
        picture = pil_to_tensor(png.convert("RGB"))
    assert picture.shape == (3, 32, 32) and count_colour(picture, (0, 255, 0)) > 0


def test_classification_recipe_is_refused(tiny_recipe, tmp_path, capsys):
    assert main(["visualize", str(tiny_recipe), "--checkpoint", "x", "--out", str(tmp_path)]) == 2
    assert "detection" in capsys.readouterr().err
