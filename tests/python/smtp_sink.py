"""A real SMTP server on loopback for the dashboard's mail test (crates/cerver/tests/dashboard.rs).

Usage: smtp_sink.py DIR. Listens on 127.0.0.1 (a free port), prints "listening on 127.0.0.1:PORT",
and writes every message it receives to DIR/<n>.eml (headers, a blank line, the body, as
received). Runs until killed.
"""

import asyncio
import socket
import sys
from pathlib import Path

from aiosmtpd.controller import Controller


class Spool:
    def __init__(self, directory: Path):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.count += 1
        # The envelope's recipients as a `To:` line too, so that the test finds the mail by
        # address whatever the message's own headers look like.
        to = "".join(f"X-Envelope-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos)
        data = envelope.original_content or envelope.content
        tmp = self.directory / f"{self.count:06}.tmp"
        tmp.write_bytes(to.encode() + data)
        tmp.rename(self.directory / f"{self.count:06}.eml")
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(directory: Path) -> None:
    port = free_port()
    controller = Controller(Spool(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
