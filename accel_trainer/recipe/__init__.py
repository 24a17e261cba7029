"""Recipes: reading the TOML, the typed sections and their checks, and loading a recipe for use.

From the bottom up: `checks` (the value checks every table uses), `builder` (tables to section
dataclasses), the sections (`data_section`, `model_section`, `training_sections`,
`runtime_sections`), `task_keys` (which keys each task and data type reads), `root` (`Recipe`),
`reading` (files, `_base_`, `--set`, dumping) and `load` (`load_recipe`: the open sections parsed
into specs by their components). Only `load` sits above the components; nothing is imported here,
so reading a recipe stays free of torch.
"""
