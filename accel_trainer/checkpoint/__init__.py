"""Everything that reads or writes checkpoints and weights files; no other module touches them.

- `format.py`: the checkpoint folder (safetensors, JSON, TOML and a manifest of digests): write
  it atomically, verify it, read it back.
- `state.py`: the stateful parts a checkpoint holds (`TrainState`, `RNGState`, `OptimizerState`;
  modules and grad scalers are parts as they are).
- `manager.py`: `CheckpointManager`, the policy of one run: when to save, names, pruning, the best
  checkpoint, background writes, which checkpoint resumes.
- `weights.py`: model weights from our checkpoints, safetensors or torch files (`load_from`).
- `pretrained.py`: `model.pretrained`, timm's hub weights or a local file, fitted with a report.

The submodules are imported by name; this package itself imports nothing.
"""
