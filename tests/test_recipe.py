from __future__ import annotations

import copy

import pytest

from accel_trainer import RecipeError, load_recipe
from accel_trainer.recipe.reading import apply_overrides, dump_toml, load_raw, merge, parse_override

from .helpers.recipes import write_recipe


def test_merge_is_recursive_and_later_wins():
    base = {"optimizer": {"type": "SGD", "lr": 0.02, "momentum": 0.9}, "workflow": [["train", 1]]}
    out = merge(base, {"optimizer": {"lr": 0.01}})
    assert out["optimizer"] == {"type": "SGD", "lr": 0.01, "momentum": 0.9}
    assert base["optimizer"]["lr"] == 0.02


def test_delete_replaces_inherited_table():
    base = {"optimizer_config": {"grad_clip": {"max_norm": 10}, "other": 1}}
    out = merge(base, {"optimizer_config": {"_delete_": True, "grad_clip": {"max_norm": 35, "norm_type": 2}}})
    assert out["optimizer_config"] == {"grad_clip": {"max_norm": 35, "norm_type": 2}}


def test_base_files_relative_and_ordered(tmp_path):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_/a.toml").write_text('work_dir = "a"\n[optimizer]\ntype = "SGD"\nlr = 0.1\nmomentum = 0.9\n')
    (tmp_path / "_base_/b.toml").write_text("[optimizer]\nlr = 0.2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/r.toml").write_text(
        '_base_ = ["../_base_/a.toml", "../_base_/b.toml"]\n[optimizer]\nmomentum = 0.5\n'
    )
    data = load_raw(tmp_path / "sub/r.toml")
    assert data["optimizer"] == {"type": "SGD", "lr": 0.2, "momentum": 0.5}
    assert data["work_dir"] == "a"
    assert "_base_" not in data


def test_delete_across_files(tmp_path):
    (tmp_path / "base.toml").write_text('[lr_config]\npolicy = "step"\nstep = [8, 11]\nwarmup = "linear"\n')
    (tmp_path / "r.toml").write_text('_base_ = "base.toml"\n[lr_config]\n_delete_ = true\npolicy = "fixed"\n')
    assert load_raw(tmp_path / "r.toml")["lr_config"] == {"policy": "fixed"}


def test_base_cycle_and_missing(tmp_path):
    (tmp_path / "a.toml").write_text('_base_ = "b.toml"\n')
    (tmp_path / "b.toml").write_text('_base_ = "a.toml"\n')
    with pytest.raises(RecipeError, match="include each other"):
        load_raw(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('_base_ = "nope.toml"\n')
    with pytest.raises(RecipeError, match="nope.toml"):
        load_raw(tmp_path / "c.toml")


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("optimizer.lr=0.01", "optimizer.lr", 0.01),
        ('data.train.root="/data/x"', "data.train.root", "/data/x"),
        ('workflow=[["train",1],["val",1]]', "workflow", [["train", 1], ["val", 1]]),
        ("accelerate.deterministic=true", "accelerate.deterministic", True),
    ],
)
def test_parse_override(item, key, value):
    assert parse_override(item) == (key, value)


def test_override_errors():
    with pytest.raises(RecipeError, match="strings need quotes"):
        parse_override("data.train.root=/data/x")
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_override("optimizer.lr")
    with pytest.raises(RecipeError, match="'optimizer.lr' is a value"):
        apply_overrides({"optimizer": {"lr": 0.1}}, {"optimizer.lr.x": 1})


def test_overrides_reach_recipe(tiny_recipe):
    r = load_recipe(tiny_recipe, {"optimizer.lr": 0.5, "runner.max_epochs": 3})
    assert r.optimizer["lr"] == 0.5 and r.runner.max_epochs == 3


def test_default_work_dir_is_recipe_stem(tmp_path):
    path = write_recipe(tmp_path, name="my_exp.toml")
    text = path.read_text().replace(f'work_dir = "{tmp_path / "work"}"\n', "")
    path.write_text(text)
    assert load_recipe(path).work_dir == "work_dirs/my_exp"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optimizr": {"lr": 1}}, "unknown key 'optimizr' (did you mean \"optimizer\"?)"),
        ({"runner.max_epoch": 3}, "unknown key 'runner.max_epoch' (did you mean \"max_epochs\"?)"),
        ({"data.augment.hflp": 0.5}, "unknown key 'data.augment.hflp' (did you mean \"hflip\"?)"),
        ({"data.batch_size": "32"}, "data.batch_size = '32' has the wrong type: expected int"),
        ({"accelerate.deterministic": 1}, "accelerate.deterministic = 1 has the wrong type: expected bool"),
        ({"accelerate.mixed_precision": "fp8"}, "accelerate.mixed_precision = 'fp8' is not allowed"),
        ({"runner.type": "EpochRunner"}, 'did you mean "EpochBasedRunner"'),
        ({"lr_config.policy": "cosine_annealing"}, "lr_config.policy"),
        ({"optimizer.type": "SDG"}, "optimizer.type"),
        ({"optimizer.momentun": 0.9}, "optimizer.momentun"),
        ({"workflow": [["train", 1], ["test", 1]]}, "workflow[1]"),
        ({"runner.max_epochs": 0}, "runner.max_epochs = 0 must be > 0"),
        ({"accelerate.cpu_threads": -1}, "accelerate.cpu_threads = -1 must be >= 0"),
        (
            {"model.pretrained": "/nonexistent/w.safetensors"},
            "model.pretrained: file not found: /nonexistent/w.safetensors",
        ),
        (
            {"data.type": "imagefolder", "data.train.root": "/nonexistent/train", "data.val.root": "/nonexistent/val"},
            "folder not found: /nonexistent/train",
        ),
        ({"custom_hooks": [{"type": "NumClassChekHook"}]}, 'did you mean "NumClassCheckHook"'),
        ({"custom_hooks": [{"type": "no_such_module_xyz:Hook"}]}, "cannot import module 'no_such_module_xyz'"),
        ({"log_config.hooks": [{"type": "TextLogerHook"}]}, 'did you mean "TextLoggerHook"'),
        ({"optimizer_config.grad_clip": {"max_norm": 35, "norm": 2}}, "optimizer_config.grad_clip.norm"),
        (
            {"model.task": "detection", "data.type": "imagefolder"},
            'data.img_size: not used by task = "detection" (classification only); remove it',
        ),
        ({"data.type": "coco"}, "data.type = 'coco' does not fit model.task = 'classification'"),
        ({"load_options.revise_keys": [["(", ""]]}, "load_options.revise_keys[0]: bad regex '('"),
        ({"checkpoint_config.by_epoch": "yes"}, "checkpoint_config.by_epoch = 'yes' has the wrong type"),
    ],
)
def test_recipe_errors_name_the_key(tiny_recipe, override, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(tiny_recipe, override)
    assert message in str(info.value)


def test_broken_toml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('work_dir = "x"\n[model]\nbackbone = resnest\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)


def test_resolved_recipe_round_trips(tiny_recipe, tmp_path):
    first = dump_toml(load_recipe(tiny_recipe).to_dict())
    again = tmp_path / "again.toml"
    again.write_text(first)
    assert dump_toml(load_recipe(again).to_dict()) == first
    assert "[checkpoint_config]" in first and "interval = 5" in first


def test_recipe_changes_lists_changed_added_and_removed_keys():
    from accel_trainer.recipe.reading import recipe_changes

    saved = {"work_dir": "a", "optimizer": {"lr": 0.1, "momentum": 0.9}, "runner": {"max_epochs": 2}}
    now = {"work_dir": "b", "optimizer": {"lr": 0.01, "momentum": 0.9}, "freeze": {"epochs": 1}}
    assert recipe_changes(saved, now) == [
        "  freeze.epochs: '(unset)' -> 1",
        "  optimizer.lr: 0.1 -> 0.01",
        "  runner.max_epochs: 2 -> '(unset)'",
    ]


def test_a_saved_recipe_is_compared_as_this_version_resolves_it(tiny_recipe):
    from accel_trainer.recipe.reading import recipe_changes, resolved_again

    now = load_recipe(tiny_recipe, check_files=False).to_dict()
    saved = copy.deepcopy(now)
    saved["runner"]["max_iters"] = 0  # how an epoch runner's recipe was saved before it left the key out
    assert recipe_changes(saved, now) == ["  runner.max_iters: 0 -> '(unset)'"]
    assert recipe_changes(resolved_again(saved), now) == []
    saved["runner"]["max_epochs"] = 7
    assert recipe_changes(resolved_again(saved), now) == [f"  runner.max_epochs: 7 -> {now['runner']['max_epochs']!r}"]


ITER_RUN = {"runner.type": "IterBasedRunner", "runner.max_epochs": 0}


@pytest.mark.parametrize(
    "override, message",
    [
        ({**ITER_RUN, "runner.max_iters": 10**29}, f"runner.max_iters = {10**29} is outside TOML's 64-bit integer"),
        ({**ITER_RUN, "runner.max_iters": 10**8}, "runner.max_iters = 100000000 must be between 1 and 10_000_000"),
        ({"runner.max_epochs": 10**6}, "runner.max_epochs = 1000000 must be between 1 and 100_000"),
        ({"accelerate.seed": -1}, "accelerate.seed = -1 must be between 0 and 4_294_967_295"),
        ({"accelerate.seed": 2**32}, "accelerate.seed = 4294967296 must be between 0 and 4_294_967_295"),
        ({"accelerate.seed": 2**70}, f"accelerate.seed = {2**70} is outside TOML's 64-bit integer range"),
        (
            {"optimizer.betas": [0.9]},
            "optimizer.betas = [0.9]: AdamW takes a list of 2 numbers, e.g. betas = [0.9, 0.999]",
        ),
        ({"model.backbone": "../../../etc/passwd"}, "model.backbone = '../../../etc/passwd' is not a timm model name"),
        ({"model.backbone": "hf-hub:x/y"}, "a hub repo or weights file goes in model.pretrained"),
        ({"model.backbone": "resnet10t; rm"}, "model.backbone = 'resnet10t; rm' is not a timm model name"),
        ({"model.num_classes": 10**9}, "model.num_classes = 1000000000 must be between 1 and 100_000"),
    ],
)
def test_values_out_of_range_are_one_line_even_for_printing(tiny_recipe, override, message):
    """`check_files=False` is what `--print-recipe` reads; the value checks are all there."""
    with pytest.raises(RecipeError) as info:
        load_recipe(tiny_recipe, override, check_files=False)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "arrays or tables nested too deeply to read"),
        (b"a = " + b"{b = " * 5_000 + b"1" + b"}" * 5_000 + b"\n", "arrays or tables nested too deeply to read"),
        (b"a = " + b"[" * 100 + b"]" * 100 + b"\n", "tables or lists nested more than 32 deep"),
        (b'work_dir = "x"\n# \xff\n', "not UTF-8 text (byte 17 is 0xff)"),
    ],
)
def test_unreadable_recipe_files_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    base = tmp_path / "child.toml"
    base.write_text('_base_ = "bad.toml"\n')
    with pytest.raises(RecipeError, match=f"^{path}: "):  # a base file is named, not the file that includes it
        load_recipe(base)


@pytest.mark.parametrize(
    "runner, kept, left_out",
    [
        ({"type": "EpochBasedRunner", "max_epochs": 2}, "max_epochs = 2", "max_iters"),
        ({"type": "IterBasedRunner", "max_iters": 6, "max_epochs": None}, "max_iters = 6", "max_epochs"),
    ],
)
def test_the_resolved_recipe_prints_short_arrays_on_one_line_and_only_its_runners_length(
    tmp_path, runner, kept, left_out
):
    recipe = load_recipe(write_recipe(tmp_path, runner=runner), check_files=False)
    text = dump_toml(recipe.to_dict())
    lines = text.splitlines()
    assert 'workflow = [["train", 1], ["val", 1]]' in lines and "scale = [0.8, 1.0]" in lines
    assert kept in lines and left_out not in text
    (tmp_path / "again.toml").write_text(text)
    assert load_recipe(tmp_path / "again.toml", check_files=False).to_dict() == recipe.to_dict()


def test_every_recipe_error_names_the_file_and_the_key(tmp_path, capsys):
    from accel_trainer.cli import main

    recipe = write_recipe(tmp_path, runner={"max_epochs": -1})
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, check_files=False)
    assert str(info.value) == f"{recipe}: runner.max_epochs = -1 must be > 0"
    with pytest.raises(RecipeError, match=r"tiny\.toml: unknown key 'optimizer\.lrr'"):
        load_recipe(recipe, {"runner.max_epochs": 1, "optimizer.lrr": 0.1}, check_files=False)
    assert main([str(recipe), "--print-recipe"]) == 2
    assert capsys.readouterr().err == f"accel-trainer: error: {recipe}: runner.max_epochs = -1 must be > 0\n"


def test_a_missing_relative_data_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    (tmp_path / "recipes" / "data" / "train").mkdir(parents=True)
    data = {"type": "imagefolder", "train": {"root": "data/train"}, "val": {"root": "data/val"}}
    recipe = write_recipe(tmp_path / "recipes", data=data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    assert str(info.value) == (
        f"{recipe}: data.train.root: folder not found: data/train (looked for {tmp_path / 'data/train'}; relative "
        "paths are read from the working directory; did you mean 'recipes/data/train'? It exists relative to the "
        "recipe's folder)"
    )
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(RecipeError, match=r"data\.val\.root: folder not found: data/val \(looked for .*directory\)$"):
        load_recipe(recipe)
