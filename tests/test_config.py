"""Configuration as data: the shipped defaults are package data, a user's folder replaces them
file by file, and a user's data set names its data relative to that folder."""

import importlib.util
import json
import os

import pytest

from beamline import cli
from models import config as model_config
from models.config import CONFIG_DIR_ENV, ConfigError, default_path, search_note
from models.credit.dataset import load_dataset, resolve_data_path


def test_the_shipped_configuration_is_package_data_not_a_package():
    assert importlib.util.find_spec("config") is None
    assert model_config.SHIPPED_DIR.parent == model_config.SHIPPED_DIR.parent.parent / "models"
    assert default_path("offer_rules", "credit_german") == str(
        model_config.SHIPPED_DIR / "offer_rules" / "credit_german.json")
    assert json.loads(open(default_path("datasets", "credit_crx")).read())["model_name"] \
        == "credit_crx"


def test_a_user_folder_replaces_the_shipped_file_of_the_same_name_only(tmp_path, monkeypatch):
    (tmp_path / "offer_rules").mkdir()
    own = tmp_path / "offer_rules" / "credit_german.json"
    own.write_text('{"version": "mine"}')
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    assert default_path("offer_rules", "credit_german") == str(own)
    # Every other file still comes from the shipped defaults.
    assert default_path("offer_rules", "credit_crx") == str(
        model_config.SHIPPED_DIR / "offer_rules" / "credit_crx.json")
    assert default_path("evaluation", "credit_german").startswith(str(model_config.SHIPPED_DIR))
    assert search_note("evaluation", "x").startswith(f"{tmp_path}/evaluation/x.json")


def test_a_user_folder_that_is_not_there_is_refused_in_words(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="BEAMLINE_CONFIG_DIR .*missing, which is not a folder"):
        default_path("datasets", "credit_german")
    monkeypatch.delenv(CONFIG_DIR_ENV)
    assert cli.main(["--config_dir", str(tmp_path / "missing"), "credit", "train"]) == 2
    assert "--config_dir" in capsys.readouterr().err and CONFIG_DIR_ENV not in os.environ


def test_config_dir_before_the_command_reaches_every_job(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    rest = cli.take_config_dir(["--config_dir", str(tmp_path), "credit", "train", "--epochs",
                                "1"])
    assert rest == ["credit", "train", "--epochs", "1"]
    assert os.environ[CONFIG_DIR_ENV] == str(tmp_path)
    assert cli.take_config_dir([f"--config_dir={tmp_path}", "demo"]) == ["demo"]
    with pytest.raises(ValueError, match="needs a folder"):
        cli.take_config_dir(["--config_dir", "--help"])


def test_a_data_set_of_the_user_folder_reads_its_data_from_there(tmp_path, monkeypatch):
    shipped = json.loads(open(default_path("datasets", "credit_crx")).read())
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "credit_mine.json").write_text(json.dumps(
        {**shipped, "model_name": "credit_mine", "data": "data/mine.csv"}))
    with pytest.raises(ConfigError, match="no data set configuration named 'credit_mine'"):
        load_dataset("credit_mine")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    dataset = load_dataset("credit_mine")
    assert dataset.model_name == "credit_mine"
    assert resolve_data_path(dataset) == str(tmp_path / "data" / "mine.csv")
    # A shipped data set still names its data from the project root.
    assert resolve_data_path(load_dataset("credit_crx")).endswith("shared/data/credit/crx.data")
