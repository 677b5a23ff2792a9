"""Configuration: YAML per environment, loaded once into a typed, frozen object.

Precedence (later wins): ``conf/<env>.yaml`` shipped with the package, the file
given with ``--conf FILE``, then environment variables ``ATENDE__SECTION__KEY``
(double underscores separate the levels, e.g. ``ATENDE__SPARK__MASTER=local[4]``).
Unknown keys and bad values fail at start with a message naming the key.
"""
from atende.conf.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
