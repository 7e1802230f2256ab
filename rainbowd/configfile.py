"""
The config file's name, and the error that refuses a config: what
C{rainbowctl} and the control token's reader need of L{rainbowd.config}
without loading a config, which imports attrs and builds every key's
field (most of C{rainbowctl}'s start, which C{--help} does without).
L{rainbowd.config} has both too.
"""

DEFAULT_FILENAME = "rainbow.conf.json"


class ConfigError(Exception):
    """
    The configuration cannot be used.  C{str()} of it is a whole sentence
    for a human: the file, the key, the bad value and how to fix it.
    """
