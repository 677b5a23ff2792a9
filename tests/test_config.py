"""Configuration: typed, frozen, strict about keys and values."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from atende.conf import ConfigError, load_settings


def test_local_defaults_load_typed_and_frozen():
    settings = load_settings("local", environ={})
    assert settings.env == "local"
    assert settings.kpis.business_timezone == "America/Sao_Paulo"
    assert settings.identity.default_region == "BR"
    with pytest.raises(ValidationError):
        settings.spark.master = "local[1]"  # frozen


def test_cluster_environment_keeps_the_submitted_master():
    settings = load_settings("cluster", environ={})
    assert settings.spark.master == ""
    assert settings.spark.shuffle_partitions == 400


def test_conf_file_and_environment_override_in_order(tmp_path):
    override = tmp_path / "mine.yaml"
    override.write_text("spark:\n  master: local[1]\nkpis:\n  fcr_window_days: 3\n")
    settings = load_settings("local", override, environ={"ATENDE__KPIS__FCR_WINDOW_DAYS": "5"})
    assert settings.spark.master == "local[1]"
    assert settings.kpis.fcr_window_days == 5


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  mastr: local[1]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'spark.mastr'"):
        load_settings("local", bad, environ={})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"bad value for 'kpis.business_timezone'.*Mars/Olympus"):
        load_settings("local", environ={"ATENDE__KPIS__BUSINESS_TIMEZONE": "Mars/Olympus"})
    with pytest.raises(ConfigError, match=r"bad value for 'storage.engine'"):
        load_settings("local", environ={"ATENDE__STORAGE__ENGINE": "sqlite"})


def test_missing_file_and_unknown_environment_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings("local", tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="unknown environment 'prod'.*known: cluster, local"):
        load_settings("prod", environ={})


def test_model_knobs_are_config_and_checked():
    settings = load_settings("local", environ={
        "ATENDE__MODELS__TONE__COMMENT_CUES__NEGATIVE": '["FRIO", "seco"]',
        "ATENDE__MODELS__NBA__TOP_FEATURES": "4",
    })
    tone = settings.models.tone
    assert tone.comment_cues["negative"] == ("frio", "seco")       # lower-cased as matched
    assert "profissional" in tone.comment_cues["positive"]           # the side left out keeps its defaults
    assert settings.models.nba.top_features == 4
    assert settings.models.nba.channel_flags == {"whatsapp": "has_whatsapp"}
    with pytest.raises(ConfigError, match=r"comment_cues.*at least one phrase"):
        load_settings("local", environ={"ATENDE__MODELS__TONE__COMMENT_CUES__POSITIVE": "[]"})
    with pytest.raises(ConfigError, match=r"issue_only_actions names actions not in the catalogue: fly"):
        load_settings("local", environ={"ATENDE__MODELS__NBA__ISSUE_ONLY_ACTIONS": '["fly"]'})
    with pytest.raises(ConfigError, match=r"regularization"):
        load_settings("local", environ={"ATENDE__MODELS__NBA__REGULARIZATION": "[0, 1]"})
