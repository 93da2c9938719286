"""``[[webhooks]]`` in the config file: defaults, validation errors that name key and file,
secrets from the environment, nothing secret in the settings' repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.config import WEBHOOK_EVENTS, load_settings
from scanner.errors import ConfigError

URL = "https://user:hunter2pw@shop.example/hooks/tok_0123456789abcdef?key=k_abcdefabcdef12"
CHAINS = """
[[chains]]
name = "ethereum"
chain_id = 1
rpc_urls = ["https://rpc.example"]
confirmations = 12
"""


def write(tmp_path: Path, webhooks: str) -> str:
    path = tmp_path / "scanner.toml"
    path.write_text(CHAINS + webhooks, encoding="utf-8")
    return str(path)


def test_defaults_and_a_secret_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[webhooks]]\nurl = "{URL}"\nsecret_env = "HOOK_SECRET"\n')
    settings = load_settings(path, environ={"HOOK_SECRET": "whsec_abc123456"})
    (hook,) = settings.webhooks
    assert hook.secret_value == "whsec_abc123456"
    assert tuple(hook.events) == WEBHOOK_EVENTS and hook.chains is None
    assert (hook.timeout, hook.max_attempts) == (10.0, 20)
    shown = repr(settings) + str(settings)
    for secret in ("hunter2pw", "tok_0123456789abcdef", "k_abcdefabcdef12", "whsec_abc123456"):
        assert secret not in shown
    assert {URL, "whsec_abc123456"} <= set(settings.secrets())


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('url = "URL"\nsecret = "s"\nretries = 3', "webhooks[0].retries", "unknown key"),
        ('url = "URL"', "webhooks[0]", "exactly one of 'secret' or 'secret_env'"),
        ('url = "URL"\nsecret = "s"\nsecret_env = "X"', "webhooks[0]", "exactly one"),
        (
            'url = "ftp://x/y"\nsecret = "s"',
            "webhooks[0].url",
            "must start with http:// or https://",
        ),
        ('url = "URL"\nsecret = "s"\nevents = ["paid"]', "webhooks[0].events[0]", "Input should"),
        ('url = "URL"\nsecret = "s"\nchains = ["polygon"]', "<root>", "unknown chain(s) polygon"),
        ('url = "URL"\nsecret = "s"\ntimeout = 0', "webhooks[0].timeout", "greater than 0"),
    ],
)
def test_invalid_webhooks_name_the_key_and_the_file(
    tmp_path: Path, table: str, key: str, problem: str
) -> None:
    path = write(tmp_path, "[[webhooks]]\n" + table.replace("URL", URL) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key == key and caught.value.file == path
    message = str(caught.value)
    assert problem in message and path in message
    assert "hunter2pw" not in message and "tok_0123456789abcdef" not in message


def test_a_missing_secret_variable_is_a_configuration_error(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[webhooks]]\nurl = "{URL}"\nsecret_env = "HOOK_SECRET"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key == "webhooks[0].secret_env"
    assert "HOOK_SECRET is not set" in str(caught.value) and path in str(caught.value)


def test_the_same_url_twice_is_refused(tmp_path: Path) -> None:
    one = f'[[webhooks]]\nurl = "{URL}"\nsecret = "s"\n'
    with pytest.raises(ConfigError, match=r"webhooks\[1\]\.url: the same URL as webhooks\[0\]"):
        load_settings(write(tmp_path, one + one), environ={})
