"""Typed config: params files, overrides, validation errors that say what to do."""
import re

import pytest
import yaml

from saol_core.config import ConfigError, ExperimentConfig, make_config, parse_overrides


def test_defaults_validate_and_round_trip():
    cfg = make_config()
    assert cfg == ExperimentConfig()
    assert make_config(cfg.to_dict()) == cfg  # a saved resolved config rebuilds the same config


def test_overrides_parse_yaml_values():
    cfg = make_config(None, ["model.backbone=wrn40_2", "train.epochs=3", "optim.lr=0.05",
                             "model.taps=[1, 2]", "model.output_size=null", "loss.cutmix_prob=1"])
    assert (cfg.model.backbone, cfg.train.epochs, cfg.optim.lr) == ("wrn40_2", 3, 0.05)
    assert cfg.model.taps == [1, 2] and cfg.model.output_size is None
    assert isinstance(cfg.loss.cutmix_prob, float)  # int accepted for a float field, stored as float


def test_params_file_extends_base(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"backbone": "wrn40_2"},
                                                        "train": {"epochs": 200, "batch_size": 128}}))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "name": "exp",
                                                       "train": {"epochs": 5}, "study": {"seeds": [0]}}))
    cfg = make_config(tmp_path / "exp.yaml", ["train.batch_size=32"])
    assert (cfg.name, cfg.model.backbone, cfg.train.epochs, cfg.train.batch_size) == ("exp", "wrn40_2", 5, 32)


@pytest.mark.parametrize("override, message", [
    ("model.heads=foo", "choose one of ['gap', 'saol', 'saol+gap']"),
    ("train.epochs=abc", "train.epochs must be int"),
    ("train.epochs=true", "train.epochs must be int"),
    ("model.bogus=1", "valid keys under model"),
    ("loss.cutmix_prob=2", "cutmix_prob must be in [0, 1]"),
    ("loss.w_ss1=1", "needs model.mask_head=true"),
    ("data.dataset=cub", "needs data.root"),
    ("model.taps=3", "model.taps must be a list"),
    ("epochs", "must look like section.key=value"),
])
def test_bad_values_fail_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(None, [override])


def test_missing_and_invalid_params_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        make_config(bad)


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_what_a_run_did_not_use_does_not_make_it_another_experiment():
    from saol_core.runs import config_changes
    old = make_config(None, []).to_dict()
    old["wsol"]["cam_step"] = 0.01            # an older default, in a run that scored no localization
    old["train"]["keep_checkpoints"] = True   # a retired key older runs wrote
    now = make_config(None, []).to_dict()
    assert config_changes(old, now) == []
    cadence = make_config(None, ["train.checkpoint_every=5", "train.checkpoint_minutes=0"]).to_dict()
    assert config_changes(cadence, now) == []   # when checkpoints are written changes nothing a run computes
    assert config_changes(make_config(None, ["train.compile=true"]).to_dict(), now) == []   # nor how a step runs
    assert make_config(old).train.epochs == now["train"]["epochs"]   # an old config.yaml still loads
    scored = make_config(None, ["wsol.enabled=true"]).to_dict()
    assert config_changes({**scored, "wsol": {**scored["wsol"], "cam_step": 0.01}}, scored) == ["wsol.cam_step"]
