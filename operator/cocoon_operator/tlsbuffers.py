"""asyncio's TLS read buffer, sized to what a TLS read returns: RSS per connection.

asyncio gives every TLS connection a read buffer of ``SSLProtocol.max_size``
bytes, 256 KB (``asyncio/sslproto.py``), allocated and zero-filled when the
connection is made, so all of it is resident however little the connection
reads. The operator holds several at all times (kopf's watches and its own
client, to the apiserver) and more while a fleet comes up (the apiserver's
calls to the admission webhook, the operator's own requests under load).
Traced at the top of a ramp of 300 workers (docs/bench.md, "The final code
at 1,000 and 3,000", 18.), 11.5 of the 58.6 MB the operator had allocated in
Python were these buffers: about 45 connections.

A TLS record carries at most 16 KB of data (RFC 8446, section 5.1), and
asyncio reads what has been decrypted into that buffer, a buffer's worth per
call, until the TLS object wants more bytes from the socket
(``_do_read__copied``). :data:`READ_BUFFER`, 64 KB, is four full records per
call: a large response (a list of a fleet's workers) takes more calls of the
same loop, nothing else changes. Set once, before the first connection
(:func:`shrink_tls_read_buffers`); connections made before keep theirs.
"""

from __future__ import annotations

import asyncio.sslproto

#: Bytes asyncio reads per call from a TLS connection (see the module).
READ_BUFFER = 64 * 1024


def shrink_tls_read_buffers(size: int = READ_BUFFER) -> tuple[int, int] | None:
    """Make the TLS read buffer of connections made from now on at most ``size`` bytes;
    returns (asyncio's size before, the size now), or None when this Python's
    asyncio has no such setting (then nothing is changed)."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    before = getattr(protocol, "max_size", None)
    if protocol is None or type(before) is not int:
        return None
    if before > size:
        protocol.max_size = size
    return before, protocol.max_size
