#!/usr/bin/env python3
"""Bulk-transfer checker for umbra's userspace tests and benchmarks.

  bulk.py server ADDR PORT            echo-hash server (asyncio)
  bulk.py client ADDR PORT N SIZE     N concurrent connections, SIZE bytes each way
  bulk.py udp-echo ADDR PORT          UDP echo server
  bulk.py udp-ping ADDR PORT          one UDP round trip
  bulk.py echo ADDR PORT              plain TCP echo server
  bulk.py echo-threads ADDR PORT      TCP echo server, one thread per connection
  bulk.py duplex ADDR PORT N SIZE [TIMEOUT]
                                      N concurrent connections to an echo server,
                                      each sends SIZE bytes while reading the echo,
                                      half-closes, reads to EOF, checks sha256;
                                      also reports the longest stretch the
                                      machine's CPUs were mostly idle meanwhile
  bulk.py sink ADDR PORT              reads each connection to EOF, answers sha256
  bulk.py upload ADDR PORT N SIZE [TIMEOUT]
                                      N concurrent connections each send SIZE bytes
                                      one way to a sink and check its sha256
  bulk.py hold ADDR PORT N SIZE SECS  N connections each echo SIZE bytes, then
                                      stay open SECS seconds (memory per conn)

Client protocol: send SIZE bytes (seeded by the connection number), half-close;
the server reads to EOF, answers sha256(received) then SIZE bytes derived from
that hash, and closes. The client checks both: any lost, reordered or corrupted
byte in either direction fails. Prints "ok N conns, B bytes" or the failures.
"""
import asyncio, hashlib, os, socket, sys


def stream(seed: bytes, size: int) -> bytes:
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


async def handle(reader, writer):
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        d = h.digest()
        writer.write(d + stream(d, n))
        await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()


async def server(addr, port):
    srv = await asyncio.start_server(handle, addr, port, backlog=4096)
    async with srv:
        await srv.serve_forever()


async def one(addr, port, i, size, sem):
    async with sem:
        data = stream(b"conn-%d" % i, size)
        reader, writer = await asyncio.open_connection(addr, port)
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        got = bytearray()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
        writer.close()
        d = hashlib.sha256(data).digest()
        if bytes(got[:32]) != d:
            return f"conn {i}: server saw different bytes ({len(got)} back)"
        if bytes(got[32:]) != stream(d, size):
            return f"conn {i}: reply corrupted or short ({len(got) - 32}/{size})"
        return None


async def client(addr, port, n, size, parallel):
    sem = asyncio.Semaphore(parallel)
    res = await asyncio.gather(*(one(addr, port, i, size, sem) for i in range(n)),
                               return_exceptions=True)
    bad = [r for r in res if r is not None]
    if bad:
        for b in bad[:10]:
            print("FAIL", b)
        print(f"{len(bad)} of {n} connections failed")
        return 1
    print(f"ok {n} conns, {2 * n * size} bytes")
    return 0


async def echo(reader, writer):
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()


async def echo_server(addr, port):
    srv = await asyncio.start_server(echo, addr, port, backlog=4096)
    async with srv:
        await srv.serve_forever()


def echo_threads(addr, port):
    import threading
    srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(4096)

    def serve(c):
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


async def duplex_one(addr, port, i, size, timeout, times):
    start = asyncio.get_running_loop().time()
    data = stream(b"duplex-%d" % i, size)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)

    async def send():
        view = memoryview(data)
        for off in range(0, size, 16384):
            writer.write(view[off:off + 16384])
            await writer.drain()
        writer.write_eof()

    async def recv():
        h, n = hashlib.sha256(), 0
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return h.digest(), n
            h.update(chunk)
            n += len(chunk)

    try:
        _, (digest, n) = await asyncio.wait_for(asyncio.gather(send(), recv()), timeout)
    except asyncio.TimeoutError:
        return f"conn {i}: timed out after {timeout} s"
    finally:
        writer.close()
    times.append(asyncio.get_running_loop().time() - start)
    if n != size or digest != hashlib.sha256(data).digest():
        return f"conn {i}: echo differs ({n}/{size} bytes back)"
    return None


def cpu_ticks():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


async def idle_stretches(out, period=0.5, idle_below=0.25):
    """Samples the machine's CPU use every `period` s; keeps in out[0] the
    longest run of samples below `idle_below` busy, in seconds. A transfer
    that waits on timers shows as such a run; one that is CPU-bound does not
    (foreign load only makes the machine busier)."""
    prev, run = cpu_ticks(), 0.0
    while True:
        await asyncio.sleep(period)
        cur = cpu_ticks()
        busy, total = cur[0] - prev[0], cur[1] - prev[1]
        prev = cur
        run = run + period if total and busy / total < idle_below else 0.0
        out[0] = max(out[0], run)


async def duplex(addr, port, n, size, timeout):
    loop = asyncio.get_running_loop()
    start, times, idle = loop.time(), [], [0.0]
    sampler = asyncio.create_task(idle_stretches(idle))
    res = await asyncio.gather(*(duplex_one(addr, port, i, size, timeout, times)
                                 for i in range(n)), return_exceptions=True)
    sampler.cancel()
    took = loop.time() - start
    bad = [r for r in res if r is not None]
    slow = max(times) if times else 0.0
    if bad:
        for b in bad[:10]:
            print("FAIL", b)
        print(f"{len(bad)} of {n} connections failed after {took:.1f} s")
        return 1
    print(f"ok {n} conns, {2 * n * size} bytes both ways, in {took:.2f} s "
          f"(slowest connection {slow:.2f} s; CPUs idle at most {idle[0]:.1f} s in a row)")
    return 0


async def sink(reader, writer):
    h = hashlib.sha256()
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            h.update(chunk)
        writer.write(h.digest())
        await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()


async def sink_server(addr, port):
    srv = await asyncio.start_server(sink, addr, port, backlog=4096)
    async with srv:
        await srv.serve_forever()


async def upload_one(addr, port, i, size, timeout):
    data = stream(b"upload-%d" % i, size)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
    try:
        view = memoryview(data)
        for off in range(0, size, 65536):
            writer.write(view[off:off + 65536])
            await writer.drain()
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(64), timeout)
    except asyncio.TimeoutError:
        return f"conn {i}: timed out"
    finally:
        writer.close()
    return None if got == hashlib.sha256(data).digest() else f"conn {i}: sink saw other bytes"


async def upload(addr, port, n, size, timeout):
    loop = asyncio.get_running_loop()
    start = loop.time()
    res = await asyncio.gather(*(upload_one(addr, port, i, size, timeout) for i in range(n)),
                               return_exceptions=True)
    took = loop.time() - start
    bad = [r for r in res if r is not None]
    if bad:
        for b in bad[:10]:
            print("FAIL", b)
        print(f"{len(bad)} of {n} connections failed after {took:.1f} s")
        return 1
    print(f"ok {n} conns, {n * size} bytes one way, in {took:.2f} s")
    return 0


async def hold_one(addr, port, size, ready, release):
    reader, writer = await asyncio.open_connection(addr, port)
    writer.write(b"x" * size)
    await writer.drain()
    await reader.readexactly(size)
    ready.append(1)
    await release.wait()
    writer.close()


async def hold(addr, port, n, size, secs):
    ready, release = [], asyncio.Event()
    tasks = [asyncio.create_task(hold_one(addr, port, size, ready, release)) for _ in range(n)]
    # Give up waiting after 60 s: report how many a proxy actually holds.
    deadline = asyncio.get_running_loop().time() + 60
    while len(ready) < n and not any(t.done() for t in tasks):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    print(f"holding {len(ready)}", flush=True)
    await asyncio.sleep(secs)
    release.set()
    for t in tasks:
        if not t.done():
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main():
    cmd = sys.argv[1]
    if cmd == "server":
        asyncio.run(server(sys.argv[2], int(sys.argv[3])))
    elif cmd == "client":
        n, size = int(sys.argv[4]), int(sys.argv[5])
        parallel = int(sys.argv[6]) if len(sys.argv) > 6 else n
        sys.exit(asyncio.run(client(sys.argv[2], int(sys.argv[3]), n, size, parallel)))
    elif cmd == "echo":
        asyncio.run(echo_server(sys.argv[2], int(sys.argv[3])))
    elif cmd == "echo-threads":
        echo_threads(sys.argv[2], int(sys.argv[3]))
    elif cmd == "duplex":
        n, size = int(sys.argv[4]), int(sys.argv[5])
        timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0
        sys.exit(asyncio.run(duplex(sys.argv[2], int(sys.argv[3]), n, size, timeout)))
    elif cmd == "sink":
        asyncio.run(sink_server(sys.argv[2], int(sys.argv[3])))
    elif cmd == "upload":
        n, size = int(sys.argv[4]), int(sys.argv[5])
        timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0
        sys.exit(asyncio.run(upload(sys.argv[2], int(sys.argv[3]), n, size, timeout)))
    elif cmd == "hold":
        asyncio.run(hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                         int(sys.argv[5]), float(sys.argv[6])))
    elif cmd == "udp-echo":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[2], int(sys.argv[3])))
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(b"echo:" + data, peer)
    elif cmd == "udp-ping":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        msg = os.urandom(8).hex().encode()
        for _ in range(3):
            s.sendto(msg, (sys.argv[2], int(sys.argv[3])))
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                continue
            if data == b"echo:" + msg:
                print("ok")
                return
        sys.exit(1)


if __name__ == "__main__":
    main()
