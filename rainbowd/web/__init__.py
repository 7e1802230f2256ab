"""
The data path: what a client's request goes through on the public port,
from the accepted connection to the app's response and back.  It knows
the generations only as "the backend to send this request to".
"""
