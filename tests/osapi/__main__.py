"""python -m tests.osapi --port 5000 --build-delay 2 --create-delay 1"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import start_server


def _yaml(doc: dict, indent: int = 0) -> str:
    """Tiny YAML emitter for the clouds.yaml snippet (no PyYAML needed)."""
    lines = []
    pad = "  " * indent
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines.append(_yaml(v, indent + 1))
        else:
            lines.append(f"{pad}{k}: {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.osapi",
                                 description="Local fake OpenStack (Keystone v3, Nova, Glance, "
                                             "Neutron) for openstacksdk.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    ap.add_argument("--build-delay", type=float, default=0.0,
                    help="seconds a new server stays in BUILD")
    ap.add_argument("--create-delay", type=float, default=0.0,
                    help="seconds POST /servers takes to answer")
    ap.add_argument("--action-delay", type=float, default=0.0,
                    help="seconds stop/start/reboot/... take to complete")
    ap.add_argument("--max-microversion", default="2.79")
    ap.add_argument("--cloud-name", default="fake")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = ap.parse_args(argv)

    fake = start_server(args.port, host=args.host, build_delay=args.build_delay,
                        create_delay=args.create_delay, action_delay=args.action_delay,
                        max_microversion=args.max_microversion, verbose=args.verbose)
    print(f"auth_url: {fake.url}")
    print("# clouds.yaml (user demo / password secret):")
    print(_yaml(fake.clouds_yaml(args.cloud_name)))
    print(f"# export OS_CLIENT_CONFIG_FILE=/path/to/clouds.yaml OS_CLOUD={args.cloud_name}",
          flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
