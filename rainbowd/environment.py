"""
The environment variables that more than one part of rainbowd reads or
sets, without Twisted (C{rainbowctl} reads them).
"""

#: The environment variable, set to 1, that tells a verify's processes from
#: its generation's (both carry the generation's marker; see
#: L{rainbowd.app.verify}), so that those that left the verify's process group
#: are found and killed with it, and rainbowctl refuses to redeploy from one.
VERIFY_VARIABLE = "RAINBOWD_VERIFY"
