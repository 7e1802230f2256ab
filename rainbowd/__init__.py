# -*- test-case-name: rainbowd.test.unit.test_tap -*-
"""
rainbowd: zero-downtime redeploys for a plain web app on one machine.
"""

__version__ = "0.1.0"


def versionLine() -> str:
    """
    rainbowd's version and those of the Twisted and the Python it runs on,
    as C{--version} prints them and rainbowd logs them at startup.
    """
    import platform

    import twisted

    return (
        f"rainbowd {__version__} (Twisted {twisted.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )
