"""
The generations: the app's versions and their processes, from launch to
stop, and the deployer that moves from one to the next.  Nothing here
knows HTTP from the client's side.

(No imports here: L{rainbowd.config}, which C{rainbowctl} imports, reads
L{rainbowd.app.releases}, and C{rainbowctl} must not import Twisted.)
"""
