"""
The operator's side: what an operator, a supervisor or a dashboard uses:
the control API, the metrics, systemd's notifications, the deploy history,
and C{rainbowctl}.

No imports here: C{rainbowctl} (L{rainbowd.control.ctl}) must not import
Twisted, so that it starts fast.
"""
