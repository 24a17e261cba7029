"""Training memory with the backbone frozen vs trainable, for a detection or classification recipe.

One optimizer step in each stage on the recipe's model (random init) and a batch of its image
size, counting what a step keeps alive: tensors saved for backward (activations), gradients and
optimizer state. On a GPU the allocator's peak is reported too. The frozen stage is what
`[freeze]` sets up: frozen modules get requires_grad=False and their norm layers eval mode.

    python benchmarks/freeze_memory.py [--recipe recipes/det.toml] [--batch 8] [--size 64]
"""

from __future__ import annotations

import argparse

import torch

from accel_trainer import load_recipe
from accel_trainer.hooks.freeze import resolve_modules
from accel_trainer.optim import build_optimizer
from accel_trainer.tasks import build_task

MB = 2**20


def step_memory(recipe_path: str, frozen: bool, batch: int, size: int, device: torch.device) -> dict[str, float]:
    recipe = load_recipe(recipe_path)
    task = build_task(recipe)
    torch.manual_seed(0)
    model = task.build_model().to(device).train()
    if frozen:
        for module in resolve_modules(model, recipe.freeze.modules or ["backbone"]).values():
            module.requires_grad_(False)
            module.eval()
    optimizer, _ = build_optimizer(model, recipe.specs.optimizer)
    images = torch.rand(batch, 3, size, size, device=device)
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if recipe.model.task == "detection":
            boxes = torch.tensor([[4.0, 4.0, size / 2, size / 2]], device=device)
            targets = [{"boxes": boxes, "labels": torch.tensor([1], device=device)} for _ in range(batch)]
            loss = sum(model(list(images), targets).values())
        else:
            loss = model(images).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    state = sum(
        v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = {
        "trainable params (M)": trainable / 1e6,
        "saved activations (MB)": saved / MB,
        "gradients (MB)": grads / MB,
        "optimizer state (MB)": state / MB,
    }
    if device.type == "cuda":
        out["CUDA peak allocated (MB)"] = torch.cuda.max_memory_allocated(device) / MB
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/det.toml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trainable = step_memory(args.recipe, False, args.batch, args.size, device)
    frozen = step_memory(args.recipe, True, args.batch, args.size, device)
    print(f"{args.recipe}, batch {args.batch} x {args.size} px, {device}")
    print(f"{'':28s} {'trainable':>10s} {'frozen':>10s} {'frozen/trainable':>17s}")
    for key in trainable:
        ratio = frozen[key] / trainable[key] if trainable[key] else float("nan")
        print(f"{key:28s} {trainable[key]:10.2f} {frozen[key]:10.2f} {ratio:17.2f}")


if __name__ == "__main__":
    main()
