"""kube-proxy's part in the deploy smoke: listen on each Service port, relay to the pod's target port.

    python3 forwarder.py 80=dicomlab-proxy-pod:8080 [PORT=HOST:PORT ...]

Runs inside a container on the smoke's network that carries the Service's DNS names; the target is
resolved on every connection, so a restarted pod (new address) is found again. Standard library only.
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def handler(host, port):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


async def main():
    servers = []
    for item in sys.argv[1:]:
        listen, target = item.split("=", 1)
        host, port = target.rsplit(":", 1)
        servers.append(await asyncio.start_server(handler(host, int(port)), "0.0.0.0", int(listen)))
        print(f"forwarding :{listen} -> {host}:{port}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
