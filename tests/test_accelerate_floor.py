"""The accelerate floor in pyproject.toml is the first release with every Accelerate API the package uses.

`FIRST_VERSION` lists each API the package touches (a name, an `Accelerator` attribute, or a
keyword argument of one) with the first release that has it, read from the released wheels
(entries present in 1.0.0, the oldest release checked, say 1.0.0). The tests fail when the
package uses an API the table lacks, when the installed accelerate lacks one, or when the floor
differs from the newest first version.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import accelerate
from accelerate import Accelerator
from packaging.version import Version

from .helpers import REPO

FIRST_VERSION = {
    "accelerate.Accelerator": "1.0.0",
    "accelerate.Accelerator(cpu, mixed_precision, gradient_accumulation_steps, log_with, project_config)": "1.0.0",
    "accelerate.Accelerator(step_scheduler_with_optimizer, kwargs_handlers, dynamo_backend, dataloader_config)": "1.0.0",
    "accelerate.PartialState": "1.0.0",
    "accelerate.PartialState(cpu)": "1.0.0",
    "accelerate.PartialState.split_between_processes": "1.0.0",
    "accelerate.PartialState.destroy_process_group": "1.0.0",
    "accelerate.state.AcceleratorState": "1.0.0",
    "accelerate.state.AcceleratorState._reset_state(reset_partial_state)": "1.0.0",
    "accelerate.data_loader.BatchSamplerShard": "1.0.0",
    "accelerate.data_loader.BatchSamplerShard(num_processes)": "1.0.0",
    "accelerate.tracking.MLflowTracker": "1.0.0",
    "accelerate.commands.config.default_config_file": "1.0.0",
    "accelerate.commands.config.config_args.load_config_from_file": "1.0.0",
    "accelerate.optimizer.AcceleratedOptimizer": "1.0.0",
    "accelerate.utils.DistributedType": "1.0.0",
    "accelerate.utils.DataLoaderConfiguration": "1.0.0",
    "accelerate.utils.DataLoaderConfiguration(non_blocking)": "1.0.0",
    "accelerate.utils.DistributedDataParallelKwargs": "1.0.0",
    "accelerate.utils.InitProcessGroupKwargs": "1.0.0",
    "accelerate.utils.InitProcessGroupKwargs(init_method)": "1.0.0",
    "accelerate.utils.DistributedDataParallelKwargs(find_unused_parameters)": "1.0.0",
    "accelerate.utils.ProjectConfiguration": "1.0.0",
    "accelerate.utils.ProjectConfiguration(project_dir, logging_dir)": "1.0.0",
    "accelerate.utils.broadcast_object_list": "1.0.0",
    "accelerate.utils.gather_object": "1.0.0",
    "accelerate.utils.recursively_apply": "1.0.0",
    "accelerate.utils.send_to_device": "1.0.0",
    "accelerate.utils.set_seed": "1.0.0",
    "accelerate.utils.set_seed(deterministic)": "1.0.0",
    "Accelerator.accumulate": "1.0.0",
    "Accelerator.state": "1.0.0",
    "Accelerator.backward": "1.0.0",
    "Accelerator.clip_grad_norm_": "1.0.0",
    "Accelerator.device": "1.0.0",
    "Accelerator.distributed_type": "1.0.0",
    "Accelerator.end_training": "1.0.0",
    "Accelerator.gather_for_metrics": "1.0.0",
    "Accelerator.gather_for_metrics(use_gather_object)": "1.0.0",
    "Accelerator.get_tracker": "1.0.0",
    "Accelerator.gradient_accumulation_steps": "1.0.0",
    "Accelerator.init_trackers": "1.0.0",
    "Accelerator.init_trackers(config, init_kwargs)": "1.0.0",
    "Accelerator.is_local_main_process": "1.0.0",
    "Accelerator.is_main_process": "1.0.0",
    "Accelerator.mixed_precision": "1.0.0",
    "Accelerator.num_processes": "1.0.0",
    "Accelerator.prepare": "1.0.0",
    "Accelerator.reduce": "1.0.0",
    "Accelerator.reduce(reduction)": "1.0.0",
    "Accelerator.scaler": "1.0.0",
    "Accelerator.skip_first_batches": "1.0.0",
    "Accelerator.step": "1.0.0",
    "Accelerator.sync_gradients": "1.0.0",
    "Accelerator.unwrap_model": "1.0.0",
    "Accelerator.unwrap_model(keep_torch_compile)": "1.3.0",
    "Accelerator.wait_for_everyone": "1.0.0",
}


def _split(entry: str) -> tuple[str, list[str]]:
    match = re.fullmatch(r"([\w.]+)(?:\((.*)\))?", entry)
    assert match, entry
    return match[1], [k.strip() for k in (match[2] or "").split(",") if k.strip()]


def _resolve(name: str, accelerator: Accelerator):
    if name.startswith("Accelerator."):
        attr = name.split(".", 1)[1]
        return getattr(type(accelerator), attr, None) or getattr(accelerator, attr)
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        parent, _, cls = module.rpartition(".")
        return getattr(getattr(importlib.import_module(parent), cls), attr)


def missing_apis(accelerator: Accelerator) -> list[str]:
    """Entries of the table the installed accelerate lacks."""
    missing = []
    for entry in FIRST_VERSION:
        name, keywords = _split(entry)
        try:
            obj = _resolve(name, accelerator)
        except (ImportError, AttributeError):
            missing.append(entry)
            continue
        if keywords:
            params = _parameters(obj)
            if any(k not in params for k in keywords):
                missing.append(entry)
    return missing


def _parameters(fn) -> set[str]:
    """Parameter names; through decorators that do not set `__wrapped__` (Accelerate's
    `on_main_process`), those of the function the wrapper closes over."""
    params = inspect.signature(fn).parameters
    if all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()):
        inner = [c.cell_contents for c in getattr(fn, "__closure__", None) or () if inspect.isfunction(c.cell_contents)]
        if inner:
            return _parameters(inner[0])
    return set(params)


def used_apis() -> set[str]:
    """Accelerate names imported by the package, `Accelerator` attributes read on `accelerator`
    objects, and the keywords of calls to either."""
    used: set[str] = set()
    for path in (REPO / "accel_trainer").rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("accelerate"):
                for alias in node.names:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    used.add(f"{node.module}.{alias.name}")
        for node in ast.walk(tree):
            target = None
            if isinstance(node, ast.Attribute) and _is_accelerator(node.value):
                target = f"Accelerator.{node.attr}"
                used.add(target)
            if isinstance(node, ast.Call) and node.keywords:
                func = node.func
                if isinstance(func, ast.Attribute) and _is_accelerator(func.value):
                    target = f"Accelerator.{func.attr}"
                elif isinstance(func, ast.Name) and func.id in imported:
                    target = imported[func.id]
                elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in imported:
                    target = f"{imported[func.value.id]}.{func.attr}"
                else:
                    continue
                used |= {f"{target}({k.arg})" for k in node.keywords if k.arg}
    return used


def _is_accelerator(node: ast.expr) -> bool:
    """`accelerator`, `self.accelerator`, `trainer.accelerator` (not `torch.accelerator`)."""
    if isinstance(node, ast.Name):
        return node.id == "accelerator"
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "accelerator"
        and isinstance(node.value, ast.Name)
        and node.value.id in ("self", "trainer")
    )


def covered() -> set[str]:
    out = set()
    for entry in FIRST_VERSION:
        name, keywords = _split(entry)
        out.add(name)
        out |= {f"{name}({k})" for k in keywords}
    return out


def test_the_table_covers_every_accelerate_api_the_package_uses():
    assert sorted(used_apis() - covered()) == []


def test_installed_accelerate_has_every_api_and_the_floor_is_the_newest_first_version():
    accelerator = Accelerator(cpu=True)
    assert missing_apis(accelerator) == [], f"accelerate {accelerate.__version__}"
    floor = re.search(r'"accelerate>=([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert floor, "pyproject.toml: no accelerate>= floor"
    assert Version(floor[1]) == max(Version(v) for v in FIRST_VERSION.values())
