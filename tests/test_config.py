"""Settings: one typed source for env, flags and README; secrets never printed."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import pytest

from beacon import config
from beacon.config import ConfigError, Secret, Settings
from beacon.enums import ConsentMode


def test_settings_are_typed_from_the_environment():
    s = config.load(
        environ={
            "BEACON_PORT": "9000",
            "BEACON_COOKIE_SECURE": "off",
            "BEACON_REDIS_TIMEOUT": "0.25",
            "BEACON_MALL_HOSTS": "shop.test, www.shop.test",
            "BEACON_DATA_DIR": "/tmp/x",
            "BEACON_MALL_CONSENT_MODE": "drop",
            "BEACON_TRUSTED_PROXIES": "10.0.0.0/8",
        }
    )
    assert s.port == 9000 and s.cookie_secure is False and s.redis_timeout == 0.25
    assert s.mall_hosts == ("shop.test", "www.shop.test")
    assert s.data_dir == Path("/tmp/x")
    assert s.mall_consent_mode is ConsentMode.DROP
    assert str(s.trusted_proxies[0]) == "10.0.0.0/8"


def test_flags_override_the_environment():
    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    s = config.from_args(parser.parse_args(["--port", "81"]))
    assert s.port == 81


def test_settings_are_frozen():
    s = config.load(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "env, value, names",
    [
        ("BEACON_PORT", "eighty", "BEACON_PORT='eighty'"),
        ("BEACON_COOKIE_SECURE", "maybe", "BEACON_COOKIE_SECURE='maybe'"),
        ("BEACON_PARTNER_CONSENT_MODE", "cookieless", "BEACON_PARTNER_CONSENT_MODE='cookieless'"),
        ("BEACON_LOG_LEVEL", "loud", "BEACON_LOG_LEVEL='loud'"),
        ("BEACON_IPV4_PREFIX", "33", "BEACON_IPV4_PREFIX=33"),
        ("BEACON_TABLE", "events; DROP TABLE x", "BEACON_TABLE="),
    ],
)
def test_a_bad_value_names_the_setting_and_the_value(env, value, names):
    with pytest.raises(ConfigError, match=names.replace("(", r"\(")):
        config.load(environ={env: value})


def test_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        config.load({"prot": 1}, environ={})


def test_secrets_are_masked_in_repr_str_and_logs(caplog):
    s = config.load(
        environ={
            "BEACON_SECRET_KEYS": "k-one-0123456789,k-two-0123456789",
            "BEACON_MALL_API_KEY": "mall-key-abcdef",
            "BEACON_REDIS_URL": "redis://:hunter2@redis.internal:6379/0",
            "BEACON_CLICKHOUSE_URL": "https://beacon:s3cret@ch.internal:8443/",
        }
    )
    shown = repr(s) + str(s.secret_keys) + str(s.mall_api_key) + str(s.redis_url)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %s %r", s.redis_url, s.clickhouse_url, s)
    for secret in ("k-one-0123456789", "k-two-0123456789", "mall-key-abcdef", "hunter2", "s3cret"):
        assert secret not in shown and secret not in caplog.text
    assert "redis.internal:6379" in caplog.text  # where it connects stays readable
    assert s.secret_keys[0].reveal() == "k-one-0123456789"
    assert s.redis_url.reveal() == "redis://:hunter2@redis.internal:6379/0"


def test_a_bad_secret_value_is_not_echoed():
    with pytest.raises(ConfigError) as info:
        config.load(environ={"BEACON_COOKIE_SECURE": "x"})
    assert "x" in str(info.value)


def test_secret_equality_and_truth():
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert not Secret("") and Secret("x")


def test_code_may_pass_plain_strings_for_secrets():
    s = config.load({"secret_keys": ("abc",), "mall_api_key": "key"}, environ={})
    assert isinstance(s.secret_keys[0], Secret) and s.mall_api_key.reveal() == "key"


def test_worker_environment_round_trips_every_setting():
    s = config.load(
        {"secret_keys": ("k1", "k2"), "mall_hosts": ("a.test", "b.test"), "redis_url": "redis://:pw@h/0", "port": 9999}, environ={}
    )
    assert config.load(environ=config.to_environ(s)) == s


def test_every_setting_has_help_and_a_cast():
    for f in dataclasses.fields(Settings):
        assert f.metadata["help"], f.name
    assert {o.name for o in config.OPTIONS} == {f.name for f in dataclasses.fields(Settings)}


def test_readme_settings_table_is_generated_from_settings():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert config.markdown_table() in readme, "run: python -m beacon.config README.md"
