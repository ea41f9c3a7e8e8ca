#!/usr/bin/env python3
"""Handshake flood for umbra's load tests (issue 9): what anyone holding the
policy file can send.

  flood.py PUBKEY_B64 HOST PORT SECONDS [RATE]

Sends WireGuard handshake initiations with a valid mac1 (it needs only the
responder's public key) and garbage Noise, as fast as it can for SECONDS,
from one socket (at most RATE a second if given). Prints "sent N in S s (R/s)".
"""
import base64, hashlib, os, socket, struct, sys, time

pub = base64.b64decode(sys.argv[1])
host, port, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0
mac1_key = hashlib.blake2s(b"mac1----" + pub).digest()

msgs = []
for i in range(512):
    body = struct.pack("<II", 1, i) + os.urandom(108)  # type, sender, noise
    mac1 = hashlib.blake2s(body, key=mac1_key, digest_size=16).digest()
    msgs.append(body + mac1 + bytes(16))  # no mac2: no cookie yet

s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 0))
s.setblocking(False)
dst = (host, port)
sent = 0
start = time.monotonic()
end = start + secs
while time.monotonic() < end:
    for m in msgs:
        try:
            s.sendto(m, dst)
            sent += 1
        except BlockingIOError:
            pass
    if rate:
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
el = time.monotonic() - start
print(f"sent {sent} in {el:.1f} s ({sent / el:.0f}/s)")
