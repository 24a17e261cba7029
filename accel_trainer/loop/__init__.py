"""The loop's own machinery beside the hooks: `trainer.py` builds these and calls them by name.

- `step_guard.py`: the per-step vote on non-finite losses and stop signals, and what follows
  (stop, skip, roll back to a checkpoint; on a signal, the checkpoint of the last step on the way out).
- `preemption.py`: catching stop signals; ending a stop that cannot reach a step boundary; handing
  the stop to the launcher that started the process.
- `run_lock.py`: one training run per work_dir.

Unlike hooks they are not optional and not reordered by priority: the loop calls each at a
fixed point (see the stage diagram in `hooks/base.py`).
"""
