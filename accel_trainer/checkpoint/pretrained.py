"""`[model] pretrained`: timm's hub weights by tag, or a local weights file, fitted with a report.

`true` means timm's default pretrained tag of `model.backbone` (`resnest50d` -> `resnest50d.in1k`),
a string is a tagged timm name (`"resnest50d.in1k"`), a hub repo (`"hf-hub:timm/resnest50d.in1k"`)
or a local `.safetensors` / `.pth` / `.pth.tar` file. Hub weights come through timm's own loader
(`timm.models.load_state_dict_from_hf`), so the huggingface_hub cache, `HF_HOME`, `HF_ENDPOINT`
and `HF_HUB_OFFLINE` behave as they do for `timm.create_model(..., pretrained=True)`, except that
weights already in the cache are read from it without asking the hub, and a hub that does not
answer one request is an error at once (huggingface_hub would retry for about a minute). The tensors are
then fitted by key with a report (loaded, missing, unexpected, shape mismatches) instead of being
loaded silently; weights that do not cover the trunk are a RecipeError naming the source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError
from torch import nn

from ..errors import RecipeError
from .weights import TORCH_SUFFIXES, load_weights, match_report

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
# What timm's hub loader looks for in a repo: safetensors first, then the pickle it reads weights-only.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class PretrainedSource:
    """Where `model.pretrained` points: a local `file`, or a hub repo with the timm name it serves."""

    kind: str  # "file" | "hub"
    location: str  # the file path, or the hub repo id (optionally "@revision")
    name: str  # the timm model name to build: `backbone`, or `backbone.tag` for timm's own tags

    def describe(self) -> str:
        return f"{self.location}" if self.kind == "file" else f"{self.name} (hub repo {self.location})"


def _is_file_spec(value: str) -> bool:
    """A path rather than a timm tag: a weights suffix, a folder part, or an existing file."""
    return value.endswith((".safetensors", *TORCH_SUFFIXES)) or "/" in value or Path(value).is_file()


def resolve(backbone: str, pretrained: bool | str) -> PretrainedSource | None:
    """What `pretrained` names for `backbone`; None for random init. Reads no weights."""
    if pretrained is False or pretrained == "":
        return None
    if pretrained is True:
        cfg = timm.models.get_pretrained_cfg(backbone)
        if cfg is None or not cfg.hf_hub_id:
            raise RecipeError(
                f"model.pretrained = true: timm has no hub weights for model.backbone = {backbone!r}; "
                "give a tagged name or a local weights file"
            )
        arch, tag = timm.models.split_model_name_tag(backbone)
        return PretrainedSource("hub", cfg.hf_hub_id, f"{arch}.{tag or cfg.tag}")
    value = str(pretrained)
    if value.startswith(HUB_PREFIX):
        return PretrainedSource("hub", value[len(HUB_PREFIX) :], backbone)
    if _is_file_spec(value):
        return PretrainedSource("file", value, backbone)
    arch, tag = timm.models.split_model_name_tag(value)
    if arch != timm.models.split_model_name_tag(backbone)[0]:
        raise RecipeError(
            f"model.pretrained = {value!r} is for {arch}, but model.backbone = {backbone!r}; "
            f"use weights of {backbone} (e.g. pretrained = true)"
        )
    cfg = timm.models.get_pretrained_cfg(value)
    if cfg is None or not tag:
        known = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise RecipeError(
            f"model.pretrained = {value!r}: not a timm pretrained tag nor an existing file (tags of {arch}: {known})"
        )
    if not cfg.hf_hub_id:
        raise RecipeError(f"model.pretrained = {value!r}: timm serves these weights without the hub; give a local file")
    return PretrainedSource("hub", cfg.hf_hub_id, value)


def _cache_dir() -> str:
    return str(hf_constants.HF_HUB_CACHE)


def _offline() -> bool:
    is_offline = getattr(hf_constants, "is_offline_mode", None)
    return is_offline() if is_offline else bool(hf_constants.HF_HUB_OFFLINE)


def check_available(backbone: str, pretrained: bool | str) -> None:
    """Fail before anything is built when the weights cannot be had: a missing file, or hub weights
    that are not cached while huggingface_hub is offline (`HF_HUB_OFFLINE=1`)."""
    source = resolve(backbone, pretrained)
    if source is None:
        return
    if source.kind == "file":
        if not Path(source.location).is_file():
            raise RecipeError(f"model.pretrained: file not found: {source.location}")
        return
    if _offline() and not _cached_file(source.location):
        raise RecipeError(
            f"model.pretrained: {source.name} is not in the huggingface_hub cache {_cache_dir()} and HF_HUB_OFFLINE is "
            f"set; download it once with network access (e.g. run with HF_HUB_OFFLINE unset), or set model.pretrained "
            f"to a local .safetensors file"
        )


def _cached_file(repo: str) -> str | None:
    repo_id, _, revision = repo.partition("@")
    for filename in HUB_FILES:
        found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def fetch(source: PretrainedSource) -> dict[str, torch.Tensor]:
    """The weights' tensors: a local file read safely, or timm's hub loader (cache first)."""
    if source.kind == "file":
        return load_weights(source.location)
    check_available(source.name, HUB_PREFIX + source.location)
    cached = _cached_file(source.location)
    if cached:  # the file timm's loader would pick, already here: no request to the hub
        return load_weights(cached)
    _check_reachable(source)
    try:
        return timm.models.load_state_dict_from_hf(source.location, weights_only=True)
    except OSError as exc:  # huggingface_hub's network and cache errors are OSErrors
        raise _cannot_get(source, exc) from None
    except (RuntimeError, ValueError) as exc:
        raise RecipeError(f"model.pretrained: {source.name} from the hub is not a plain weights file ({exc})") from None


def _check_reachable(source: PretrainedSource) -> None:
    """One request to the hub, without huggingface_hub's retries: a hub that cannot be reached
    (no network, a refused or reset connection, a timeout) fails now instead of after a minute of
    backoff. An answer of any status means it is there; timm's loader then does the rest."""
    repo_id, _, revision = source.location.partition("@")
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, HUB_FILES[0], revision=revision or None))
    except HfHubHTTPError:
        return
    except Exception as exc:  # the transport's own errors; their classes depend on huggingface_hub's version
        raise _cannot_get(source, exc) from None


def _cannot_get(source: PretrainedSource, exc: Exception) -> RecipeError:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return RecipeError(
        f"model.pretrained: cannot get {source.name} from the hub into {_cache_dir()}: "
        f"{reason}; download it once with network access or give a local weights file"
    )


def load_into(
    model: nn.Module, source: PretrainedSource, classifier: str | tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Fit the source's weights into `model` and log what happened.

    Keys under `classifier` may differ (a 1000-class head meets a 4-class one, or a trunk has no
    head): they are reported and left at their init. Anything else of the model that the weights
    miss, or hold in another shape, means they are for another architecture: a RecipeError.
    """
    tensors = fetch(source)
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)

    def is_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in heads if h)

    own = model.state_dict()
    report = match_report(own, tensors)
    mismatched = [k.split(" ")[0] for k in report["shape mismatch"]]
    wrong = [k for k in report["missing"] + mismatched if not is_head(k)]
    if wrong:
        raise RecipeError(
            f"model.pretrained: {source.describe()} does not fit model.backbone = {source.name.split('.')[0]!r}: "
            f"{len(wrong)} of its tensors are missing or shaped differently (first: {', '.join(wrong[:3])}); "
            "these weights are for another architecture"
        )
    fitting = {k: v for k, v in tensors.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    dropped = report["unexpected"] + report["shape mismatch"]
    logger.info(
        "pretrained weights %s: %d tensors loaded, %d missing%s, %d unexpected, %d shape mismatches%s",
        source.describe(),
        len(fitting),
        len(report["missing"]),
        f" ({', '.join(report['missing'][:4])}: classifier left at init)" if report["missing"] else "",
        len(report["unexpected"]),
        len(report["shape mismatch"]),
        f"; not loaded: {', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}" if dropped else "",
    )
    return {"loaded": list(fitting), **report}
