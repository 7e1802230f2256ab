"""
Sphinx configuration for rainbowd's documentation.

Build it from the checkout's root with::

    sphinx-build -W -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rainbowd import __version__  # noqa: E402

project = "rainbowd"
author = "the rainbowd developers"
copyright = "the rainbowd developers"
version = release = __version__

extensions = ["sphinx.ext.autosectionlabel"]
# A section is linked to by its title, :ref:`When a release goes wrong`, as
# README.rst once linked to it with `When a release goes wrong`_; a title
# must then be unique across the pages.
autosectionlabel_prefix_document = False

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list = []
