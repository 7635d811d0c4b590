"""The config is TOML 1.0, read by tomli's compiled parser (about twice tomllib's speed on a
10,000-server file): TOML 1.1's additions stay errors, as they are for Python's tomllib and
for the operators' other TOML tools, whatever tomli version is installed."""

from __future__ import annotations

import tomllib

import pytest

from lvsd.config import loads
from lvsd.errors import ConfigError

TOML_1_1_ONLY = [
    'when = 1979-05-27 07:32\n',  # a time without seconds
    'key = "\\e"\n',  # the \e escape
    'key = "\\xe9"\n',  # the \xHH escape
    'table = { a = 1,\n  b = 2 }\n',  # newlines in an inline table
    'table = { a = 1, }\n',  # a trailing comma in an inline table
]


@pytest.mark.parametrize("text", TOML_1_1_ONLY)
def test_toml_1_1_syntax_is_refused_like_tomllib_does(text: str) -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads(text)
