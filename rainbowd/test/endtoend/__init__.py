"""
The tests on real processes and sockets: a real C{twistd rainbowd} serving
a real app, and the few tests of what only the kernel can answer (a
process found in C{/proc}, a port listened on, a datagram received).
"""
