"""Debug entry point: drive the runtime of one host by hand.

python -m runtime --root /var/lib/flotilla/debug import busybox.tar busybox
python -m runtime --root … run [--net none|bridge|host] IMAGE CMD…
python -m runtime --root … ps | images | rm ID | logs ID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from proto.docker.errors import DockerError
from runtime import image_transfer, image_views
from runtime.containers import Runtime
from runtime.views import summary


async def amain(args: argparse.Namespace) -> int:
    rt = Runtime(args.root, node_name=args.node)
    await rt.open()
    try:
        if args.cmd == "import":
            with open(args.tarball, "rb") as f:
                print(image_transfer.import_tarball(rt.images, f, args.reference))
        elif args.cmd == "images":
            print(json.dumps(image_views.list_images(rt.images), indent=1))
        elif args.cmd == "ps":
            for rec in rt.list():
                row = summary(rt, rec)
                print(f"{rec.id[:12]}  {rec.name:24} {row['Status']:28} {row['Command']}")
        elif args.cmd == "run":
            body = {
                "Image": args.image,
                "Cmd": args.command or None,
                "HostConfig": {"NetworkMode": args.net},
            }
            rec = await rt.create(body)
            await rt.start(rec.id)
            if args.detach:
                print(rec.id)
                return 0
            result = await rt.wait(rec.id)
            async for entry in rt.logs(rec.id):
                (sys.stdout if entry.stream == "stdout" else sys.stderr).buffer.write(entry.data)
            await rt.remove(rec.id)
            return int(result["StatusCode"])
        elif args.cmd == "rm":
            await rt.remove(args.id, force=True)
        elif args.cmd == "logs":
            async for entry in rt.logs(args.id):
                (sys.stdout if entry.stream == "stdout" else sys.stderr).buffer.write(entry.data)
    except DockerError as err:
        print(f"Error response from daemon: {err.message}", file=sys.stderr)
        return 1
    finally:
        await rt.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime")
    parser.add_argument("--root", default="/var/lib/flotilla/debug")
    parser.add_argument("--node", default="debug")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("import")
    p.add_argument("tarball")
    p.add_argument("reference", nargs="?")
    sub.add_parser("images")
    sub.add_parser("ps")
    p = sub.add_parser("run")
    p.add_argument("--net", default="bridge")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("rm")
    p.add_argument("id")
    p = sub.add_parser("logs")
    p.add_argument("id")
    sys.exit(asyncio.run(amain(parser.parse_args())))


if __name__ == "__main__":
    main()
