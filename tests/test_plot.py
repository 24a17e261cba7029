"""`accel-trainer plot` and the curves.png a finished run leaves behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from accel_trainer import Trainer, plotting
from accel_trainer.cli import main
from accel_trainer.plotting import ema, plot_curves, read_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_log(
    work_dir: Path, epochs: int = 2, iters: int = 6, interval: int = 2, name: str = "20250101_000000"
) -> Path:
    """Records shaped like the text logger's: train windows by epoch, one val record per epoch."""
    work_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch in range(1, epochs + 1):
        for inner in range(interval, iters + 1, interval):
            step = (epoch - 1) * iters + inner
            lines.append(
                {
                    "mode": "train",
                    "epoch": epoch,
                    "iter": inner,
                    "global_iter": step,
                    "lr": 0.1 / step,
                    "memory": 100,
                    "time": 0.1,
                    "data_time": 0.01,
                    "loss": 2.0 / step,
                }
            )
        lines.append(
            {
                "mode": "val",
                "epoch": epoch,
                "iter": epoch * iters,
                "lr": 0.1,
                "loss": 1.0 / epoch,
                "num_samples": 10,
                "top1": 50.0 + epoch,
                "top5": 90.0,
            }
        )
    path = work_dir / f"{name}.log.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_one_subplot_per_key_with_raw_smoothed_and_val_lines(tmp_path):
    run = read_log(write_log(tmp_path / "a"), "a")
    fig = plot_curves([run])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "lr", "top1", "top5"]
    loss_ax = fig.axes[0]
    assert len(loss_ax.lines) == 3  # raw train, smoothed train, val
    assert list(loss_ax.lines[0].get_xdata()) == [2, 4, 6, 8, 10, 12]  # global iterations across epochs
    assert list(loss_ax.lines[2].get_xdata()) == [6, 12]
    assert len(fig.axes[1].lines) == 1  # lr: train only, never smoothed
    assert len(plot_curves([run], ["loss", "top1"]).axes) == 2


def test_several_runs_are_labelled_lines(tmp_path):
    runs = [read_log(write_log(tmp_path / name), name) for name in ("base", "bigger_lr")]
    fig = plot_curves(runs, ["loss"], smooth=0)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["base train", "base val", "bigger_lr train", "bigger_lr val"]


def test_ema_is_debiased():
    assert ema([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    assert ema([0.0, 10.0], 0.5) == pytest.approx([0.0, 10.0 * 0.5 / 0.75])


def test_cli_plots_the_newest_log_of_each_dir(tmp_path, capsys):
    write_log(tmp_path / "a", name="20240101_000000", epochs=1)
    newest = write_log(tmp_path / "a", name="20250101_000000")
    write_log(tmp_path / "b")
    out = tmp_path / "cmp.png"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--keys", "loss,top1"]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert str(newest) in capsys.readouterr().out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "{work}: no such work dir"),
        (lambda d: d.mkdir(), "{work}: no *.log.json"),
        (write_log, "--keys: nope not in the logs"),
    ],
)
def test_cli_user_errors_exit_2(tmp_path, capsys, make, message):
    work = tmp_path / "run"
    make(work)
    assert main(["plot", str(work), "--out", str(tmp_path / "x.png"), "--keys", "loss,nope"]) == 2
    assert message.format(work=work) in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    write_log(tmp_path / "a")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "x.png")]) == 2
    assert 'pip install "accel_trainer[plot]"' in capsys.readouterr().err


def test_run_curves_are_skipped_without_matplotlib(tmp_path, monkeypatch):
    log = write_log(tmp_path / "a")
    monkeypatch.setattr(plotting, "have_matplotlib", lambda: False)
    plotting.write_run_curves(log, tmp_path / "a" / "curves.png")
    assert not (tmp_path / "a" / "curves.png").exists()


def test_finished_run_writes_curves_png_and_a_resumed_one_continues_them(tiny_recipe):
    trainer = Trainer.from_recipe(tiny_recipe, overrides={"runner.max_epochs": 1})
    trainer.fit()
    png = Path(trainer.work_dir) / "curves.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    png.unlink()
    resumed = Trainer.from_recipe(tiny_recipe, overrides={"runner.max_epochs": 2})
    resumed.fit(resume=True)
    assert png.read_bytes().startswith(PNG_MAGIC)
    logs = plotting.run_logs(trainer.work_dir)
    assert len(logs) == 2
    assert [r["epoch"] for r in plotting.read_run(logs, "x").train] == [1, 1, 2, 2]  # interval 4 of 8 iterations


def test_foreign_train_records_are_refused_by_line(tmp_path, capsys):
    log = tmp_path / "a" / "x.log.json"
    log.parent.mkdir()
    log.write_text(json.dumps({"mode": "train", "epoch": 1, "iter": 50, "lr": 0.1, "loss": 1.0}) + "\n")
    assert main(["plot", str(log), "--out", str(tmp_path / "x.png")]) == 2
    assert f"{log}:1: train record without global_iter" in capsys.readouterr().err


@pytest.mark.parametrize("line", ["[" * 100_000, "[1]", '{"mode": "val"'])
def test_a_log_line_that_is_not_a_record_is_named(tmp_path, capsys, line):
    log = write_log(tmp_path / "a")
    log.write_text(log.read_text() + line + "\n")
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "x.png")]) == 2
    assert f"{log}:9: not a JSON record" in capsys.readouterr().err


def write_records(
    work_dir: Path, name: str, train_iters: list[int], val_iters: list[int], resumed_at: int = 0, **val_extra
) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"mode": "run", "resumed_at_iter": resumed_at}] if resumed_at else []
    lines += [
        {"mode": "train", "epoch": 1, "iter": i, "global_iter": i, "lr": 0.1, "loss": 1.0 / i} for i in train_iters
    ]
    lines += [{"mode": "val", "epoch": 1, "iter": i, "loss": 0.5, "num_samples": 4, **val_extra} for i in val_iters]
    path = work_dir / f"{name}.log.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_a_resumed_run_is_plotted_across_its_logs(tmp_path):
    work = tmp_path / "run"
    write_records(work, "20250101_000000", [1, 2, 3, 4], [2])  # an earlier run, replaced by a fresh start
    first = write_records(work, "20250102_000000", [2, 4, 6, 8, 10], [6])  # crashed after iteration 10
    resumed = write_records(work, "20250103_000000", [8, 10, 12, 14], [12], resumed_at=6)
    write_records(work, "20250104_000000", [], [14])  # --eval-only afterwards: no train records
    assert plotting.run_logs(work) == [first, resumed]
    run = plotting.read_run(plotting.run_logs(work), "run")
    assert [r["global_iter"] for r in run.train] == [2, 4, 6, 8, 10, 12, 14]  # 8 and 10 of the first log dropped
    assert [r["loss"] for r in run.train][3] == 1.0 / 8  # iteration 8 as trained again, from the later log
    assert [r["iter"] for r in run.val] == [6, 12]
    assert plotting.run_logs(work, newest=first) == [first]  # the curves.png of the first run


def test_coco_minus_one_is_not_drawn(tmp_path):
    log = write_records(tmp_path / "det", "20250101_000000", [2, 4], [2], bbox_mAP=0.1, bbox_mAP_s=-1.0)
    write_records(tmp_path / "det2", "20250101_000000", [2, 4], [2], bbox_mAP=0.1, bbox_mAP_s=-1.0)
    with open(log, "a") as f:
        f.write(
            json.dumps({"mode": "val", "epoch": 2, "iter": 4, "loss": 0.4, "bbox_mAP": 0.2, "bbox_mAP_s": 0.05}) + "\n"
        )
    mixed = plot_curves([read_log(log, "det")], ["bbox_mAP_s"])
    assert list(mixed.axes[0].lines[0].get_xdata()) == [4]
    assert "bbox_mAP_s" not in plotting.available_keys([read_log(tmp_path / "det2" / "20250101_000000.log.json", "x")])
