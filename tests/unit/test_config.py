"""Settings: declared once, documented, checked with messages that name the variable."""

import dataclasses
from pathlib import Path

import pytest

from tre.config import SETTINGS, Settings
from tre.exceptions import ConfigError


def test_defaults():
    settings = Settings.from_environ({})
    assert settings.home == Path("./var").resolve()
    assert settings.metadata_url == f"sqlite:///{Path('./var').resolve() / 'db' / 'tre.db'}"
    assert settings.keycloak_issuer == "http://127.0.0.1:8080/realms/tre"


def test_every_setting_is_declared_once_with_help_and_an_example():
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in SETTINGS]
    for s in SETTINGS:
        assert s.env.startswith("TRE_") and len(s.help) > 20 and s.example


def test_every_example_is_a_valid_value():
    for s in SETTINGS:
        s.read({s.env: s.example})


def test_overrides_win_over_the_environment(tmp_path):
    settings = Settings.from_environ({"TRE_HOME": "/nowhere"}, home=tmp_path)
    assert settings.home == tmp_path


def test_postgres_urls_use_the_installed_driver():
    settings = Settings.from_environ({"TRE_DATABASE_URL": "postgresql://u@h/db"})
    assert settings.metadata_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("env", "value", "says"),
    [
        ("TRE_KEYCLOAK_PORT", "0", "port number"),
        ("TRE_KEYCLOAK_PORT", "http", "port number"),
        ("TRE_PORTAL_URL", "portal.example.org", "http:// or https://"),
        ("TRE_DATABASE_URL", "mysql://x", "sqlite:/// or postgresql://"),
        ("TRE_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, value, says):
    with pytest.raises(ConfigError) as e:
        Settings.from_environ({env: value})
    assert env in str(e.value) and says in str(e.value) and "for example" in str(e.value)
