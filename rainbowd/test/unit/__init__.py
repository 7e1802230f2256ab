"""
The unit tests: fake reactors and in-memory transports, no processes of
their own, no real addresses, no sleeping.  They run alone, in seconds:
C{trial rainbowd.test.unit}.
"""
