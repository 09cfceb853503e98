#!/usr/bin/env python3
"""A loopback TCP bridge to casevaultd's Unix socket, for `make check-api` (scripts/check-api.sh).

    check-api-bridge.py SOCKET PORT_FILE [--max-seconds N] [--max-connections N] [--max-concurrent N]

Listens on 127.0.0.1 only, on a port the kernel picks, and writes that port to PORT_FILE once it listens.
Each TCP connection gets a Unix connection of its own to SOCKET and the bytes are copied both ways until
either side closes. The daemon knows its caller by SO_PEERCRED, so the caller is whoever runs this bridge:
check-api.sh starts one per role with setpriv, as that role's uid.

Bounded: it accepts at most --max-connections connections in all and --max-concurrent at once (more wait
in the listen backlog), refuses peers that are not 127.0.0.1, and exits after --max-seconds whatever is
going on, and as soon as its parent (check-api.sh) is gone.
Standard library only: it runs under /usr/bin/python3 as an unprivileged uid.
"""

import argparse
import asyncio
import os
import signal
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        # Half-close so that the other direction can still finish (HTTP/1.1 bodies after a request's end).
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("port_file")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--max-connections", type=int, default=200000)
    parser.add_argument("--max-concurrent", type=int, default=32)
    options = parser.parse_args()

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    # When check-api.sh goes away (even by SIGKILL), we are reparented: stop then.
    parent = os.getppid()

    async def watch_parent() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        done.set()

    loop.create_task(watch_parent())

    slots = asyncio.Semaphore(options.max_concurrent)
    accepted = 0
    unreachable = 0

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        nonlocal accepted, unreachable
        peer = client_writer.get_extra_info("peername")
        accepted += 1
        if not peer or peer[0] != "127.0.0.1" or accepted > options.max_connections:
            client_writer.close()
            if accepted > options.max_connections:
                done.set()
            return
        async with slots:
            try:
                daemon_reader, daemon_writer = await asyncio.open_unix_connection(options.socket)
            except OSError as error:
                unreachable += 1
                if unreachable == 1:  # once: the client sees its connection closed each time
                    print(f"check-api-bridge: cannot reach {options.socket}: {error}", file=sys.stderr)
                client_writer.close()
                return
            try:
                await asyncio.gather(pump(client_reader, daemon_writer), pump(daemon_reader, client_writer))
            finally:
                for writer in (client_writer, daemon_writer):
                    writer.close()

    server = await asyncio.start_server(serve, host="127.0.0.1", port=0, backlog=64)
    port = server.sockets[0].getsockname()[1]
    temporary = options.port_file + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(f"{port}\n")
    os.rename(temporary, options.port_file)
    try:
        await asyncio.wait_for(done.wait(), timeout=options.max_seconds)
    except asyncio.TimeoutError:
        print(f"check-api-bridge: {options.max_seconds:.0f} s are up; stopping", file=sys.stderr)
    server.close()
    if unreachable:
        print(f"check-api-bridge: {unreachable} connections found the daemon's socket unreachable", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
