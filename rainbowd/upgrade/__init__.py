"""
Upgrading rainbowd in place: the running rainbowd hands its listening
sockets, its generations and their processes to a new one
(L{rainbowd.upgrade.upgrader}), as the state L{rainbowd.upgrade.handover}
describes.
"""
