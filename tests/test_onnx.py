"""ONNX export: the classifier's graph matches PyTorch under onnxruntime and carries its contract and
class names; a detection head the exporter cannot express is a one-line refusal with no file."""

from __future__ import annotations

import json

import pytest
import torch

from accel_trainer.cli import main
from accel_trainer.predict import Predictor

from .helpers.recipes import TINY_DET, write_recipe

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cls_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx_cls")
    assert main([str(write_recipe(tmp)), "--set", "runner.max_epochs=1", 'workflow=[["train", 1]]']) == 0
    return tmp / "work" / "checkpoints" / "epoch_1"


def test_classifier_onnx_matches_pytorch_and_carries_its_contract(cls_ckpt, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(cls_ckpt), "--out", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "check: onnxruntime vs PyTorch on 4 val images: max abs diff" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    classes = json.loads(props["classes"])
    assert (
        classes == json.loads((cls_ckpt / "trainer_state.json").read_text())["classes"] and len(classes["names"]) == 4
    )
    assert "RGB in [0, 1]" in props["input"] and "32" in props["input"]
    # Independently of --check: raw [0, 1] images of any batch size, the normalisation inside the graph.
    predictor = Predictor.from_checkpoint(cls_ckpt, device="cpu")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    assert name == "images" and [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 3):
        images = torch.rand(batch, 3, 32, 32)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():
            want = predictor.model((images - mean) / std)
        got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
        assert (got - want).abs().max() <= 1e-4


def test_class_names_travel_in_safetensors_exports(cls_ckpt, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "model.safetensors"
    assert main(["export", str(cls_ckpt), "--out", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        classes = json.loads(f.metadata()["classes"])
    saved = json.loads((cls_ckpt / "trainer_state.json").read_text())["classes"]
    assert classes == saved and len(saved["names"]) == 4


def test_detection_head_the_exporter_cannot_express_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path, TINY_DET, name="det.toml")
    assert main([str(recipe), "--set", 'workflow=[["train", 1]]', "data.shapes.num_train=4"]) == 0
    out = tmp_path / "det.onnx"
    code = main(["export", str(tmp_path / "work" / "checkpoints" / "epoch_1"), "--out", str(out)])
    if code == 0:  # a torch whose exporter expresses the head: then the graph must match PyTorch
        assert main(["export", str(tmp_path / "work" / "checkpoints" / "epoch_1"), "--out", str(out), "--check"]) == 0
        return
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert (
        err.startswith('accel-trainer: error: cannot export model.head = "fcos" to ONNX') and "no file written" in err
    )
    assert not out.exists() and not list(tmp_path.glob(".det.onnx.tmp*"))


def test_onnx_export_refuses_backbone_only_and_unknown_suffix(cls_ckpt, tmp_path, capsys):
    assert main(["export", str(cls_ckpt), "--out", str(tmp_path / "m.onnx"), "--backbone-only"]) == 2
    assert main(["export", str(cls_ckpt), "--out", str(tmp_path / "m.pt")]) == 2
    assert ".safetensors or .onnx" in capsys.readouterr().err
