import pytest

from medseg.config import ConfigError, apply_overrides, load_config, recipe_names


def test_all_recipes_validate():
    names = recipe_names()
    assert "quickstart" in names and "unet_kvasir" in names
    for n in names:
        cfg = load_config(n)
        assert cfg.name == n


def test_overrides_are_typed():
    cfg = load_config("quickstart", ["optim.lr=0.01", "data.size=[64, 96]", "trainer.max_epochs=2", "model.kwargs={}"])
    assert cfg.optim.lr == 0.01 and cfg.data.size == (64, 96) and cfg.trainer.max_epochs == 2
    assert cfg.model.kwargs == {}


def test_bad_override_and_unknown_key_are_clear():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("quickstart", ["optim.lr"])
    with pytest.raises(ConfigError, match="optim.nope"):
        load_config("quickstart", ["optim.nope=1"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_config("nope")


def test_recipe_file_with_base_and_preset(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "base: quickstart\nname: mine\npreset: fast\n"
        "presets:\n  fast: {optim: {lr: 0.5}, trainer: {max_epochs: 1}}\n"
    )
    cfg = load_config(str(p))
    assert cfg.name == "mine" and cfg.optim.lr == 0.5 and cfg.trainer.max_epochs == 1
    assert cfg.data.builtin == "phantom-ct"  # inherited
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(str(p), ["preset=slow"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_apply_overrides_nested():
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


def test_presets_can_be_combined_in_order(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "base: quickstart\npreset: [a, b]\n"
        "presets:\n  a: {optim: {lr: 0.5}, trainer: {max_epochs: 1}}\n  b: {optim: {lr: 0.25}}\n"
    )
    cfg = load_config(str(p))
    assert cfg.optim.lr == 0.25 and cfg.trainer.max_epochs == 1


def test_label_groups_per_recipe_and_errors():
    """Each MDA-U-Net recipe scores its own organ ∪ tumour (a base's group list is replaced, not merged)."""
    for recipe, organ in (("mda_unet_kits", "kidney"), ("mda_unet_pancreas", "pancreas"), ("mda_unet_liver", "liver")):
        groups = load_config(recipe).eval.label_groups
        assert [(g.name, g.labels) for g in groups] == [(f"{organ}_and_tumour", [1, 2])]
    cfg = load_config("mda_unet_kits", ["eval.label_groups={fg: [1, 2], tumour_only: [2]}"])
    assert [(g.name, g.labels) for g in cfg.eval.label_groups] == [("fg", [1, 2]), ("tumour_only", [2])]
    with pytest.raises(ConfigError, match=r"eval: .*label_groups 'fg': label 3 is outside 1\.\.2 \(data\.num_classes = 3\)"):
        load_config("mda_unet_kits", ["eval.label_groups={fg: [1, 3]}"])
    with pytest.raises(ConfigError, match=r"eval\.label_groups\.0\.labels: .*not the background 0"):
        load_config("mda_unet_kits", ["eval.label_groups={fg: [0, 1]}"])
    with pytest.raises(ConfigError, match="'kidney': the name is already a class name"):
        load_config("mda_unet_kits", ["eval.label_groups={kidney: [1]}"])


def test_explicit_overrides_win_over_presets():
    # the `cpu` preset of m2snet_polyp sets max_epochs 3 and size 128; explicit --set values must win,
    # whether preset= comes before or after them
    for order in (["preset=cpu", "trainer.max_epochs=4"], ["trainer.max_epochs=4", "preset=cpu"]):
        cfg = load_config("m2snet_polyp", order)
        assert cfg.trainer.max_epochs == 4
        assert tuple(cfg.data.size) == (128, 128)  # the preset still applies
    assert load_config("m2snet_polyp", ["preset=cpu"]).trainer.max_epochs == 3


def test_preset_lists_in_every_spelling():
    """``--preset "[a, b]"``, ``a,b`` and ``[a, b]`` all apply a then b; anything else is one ConfigError."""
    for given in (["preset=[kvasir, cpu]"], ["preset=kvasir,cpu"], ["preset=[[kvasir, cpu]]"]):
        cfg = load_config("m2snet_polyp", given)
        assert (cfg.data.format, cfg.data.size, cfg.optim.name) == ("image_folder", (128, 128), "adamw")
    with pytest.raises(ConfigError, match="preset: expected a name"):
        load_config("m2snet_polyp", ["preset={a: 1}"])
