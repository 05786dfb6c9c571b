"""A WebTransport bridge for browser tests of the web client before a relay is at hand.

It accepts WebTransport sessions on a loopback UDP port and joins them two by two (the first
and second session on the same path). The bidirectional stream the client-role side opens
(the MoQT control stream) is piped to one the bridge opens towards the server-role side,
which accepts it; every unidirectional stream one side opens is opened on the other side
and piped, end included. One page then runs the MoQT client role, the other the server
role, over real QUIC and WebTransport in Chromium.

It understands nothing of MoQT. Usage:
    python3 wt_bridge.py [--cert cert.pem --key key.pem] [--port 0]
Without --cert it makes a development certificate browsers accept by hash (ECDSA P-256,
valid 10 days). It prints "ready <port> <certificate sha-256>" once it listens, and stops by
itself after --lifetime seconds. Needs the aioquic package.
"""

import argparse
import asyncio
import datetime
import hashlib
import os
import socket
import sys
import tempfile

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, StreamReset

WAITING: dict[bytes, "Side"] = {}


def is_uni(stream_id: int) -> bool:
    return stream_id & 2 == 2


class Side:
    """One WebTransport session, and the session it is joined to."""

    def __init__(self, proto: "Bridge", session_id: int, path: bytes):
        self.proto = proto
        self.session_id = session_id
        self.path = path
        self.peer: "Side | None" = None
        self.control: int | None = None
        # stream id here -> stream id on the peer
        self.routes: dict[int, int] = {}
        self.backlog: list[tuple[int, bytes, bool]] = []

    def send(self, stream_id: int, data: bytes, end: bool) -> None:
        self.proto._quic.send_stream_data(stream_id, data, end)
        self.proto.transmit()

    def on_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.peer is None:
            self.backlog.append((stream_id, data, end))
            return
        peer = self.peer
        if not is_uni(stream_id):
            # Control bytes from this side. `control` is the stream written *to* a side: the
            # one it opened (client role), or one the bridge opens towards it (server role,
            # which writes back on a stream of its own: aioquic cannot read a bidirectional
            # stream it opened itself).
            if self.control is None:
                self.control = stream_id
            if peer.control is None:
                peer.control = peer.proto._http.create_webtransport_stream(peer.session_id, is_unidirectional=False)
            peer.send(peer.control, data, end)
            return
        target = self.routes.get(stream_id)
        if target is None:
            target = peer.proto._http.create_webtransport_stream(peer.session_id, is_unidirectional=True)
            self.routes[stream_id] = target
        peer.send(target, data, end)

    def join(self, other: "Side") -> None:
        self.peer = other
        other.peer = self
        for side in (self, other):
            backlog, side.backlog = side.backlog, []
            for stream_id, data, end in backlog:
                side.on_data(stream_id, data, end)


class Bridge(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http: H3Connection | None = None
        self.side: Side | None = None

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            print(f"connection terminated: code {event.error_code} frame {event.frame_type} {event.reason_phrase!r}", file=sys.stderr, flush=True)
        if isinstance(event, ProtocolNegotiated):
            self._http = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, StreamReset) and self.side and self.side.peer:
            peer = self.side.peer
            target = self.side.routes.get(event.stream_id)
            if target is not None:
                peer.proto._quic.reset_stream(target, event.error_code)
                peer.proto.transmit()
        elif isinstance(event, ConnectionTerminated) and self.side and self.side.peer:
            peer = self.side.peer
            peer.proto._quic.close(error_code=0, reason_phrase=event.reason_phrase)
            peer.proto.transmit()
        if self._http is None:
            return
        for h3 in self._http.handle_event(event):
            self.h3_event(h3)

    def h3_event(self, event) -> None:
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            if headers.get(b":method") == b"CONNECT" and headers.get(b":protocol") == b"webtransport":
                reply = [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
                offered = headers.get(b"wt-available-protocols", b"")
                if b"moqt-16" in offered:
                    reply.append((b"wt-protocol", b'"moqt-16"'))
                self._http.send_headers(stream_id=event.stream_id, headers=reply)
                self.transmit()
                path = headers.get(b":path", b"/").split(b"?")[0]
                self.side = Side(self, event.stream_id, path)
                other = WAITING.pop(path, None)
                if other is None:
                    WAITING[path] = self.side
                else:
                    self.side.join(other)
            else:
                self._http.send_headers(stream_id=event.stream_id, headers=[(b":status", b"404")], end_stream=True)
                self.transmit()
        elif isinstance(event, WebTransportStreamDataReceived) and self.side:
            self.side.on_data(event.stream_id, event.data, event.stream_ended)


def dev_certificate(folder: str) -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1, valid 10 days (browsers accept
    a certificate by hash only below 14 days)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiermesh test bridge")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(folder, "cert.pem")
    key_path = os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def cert_hash(cert_path: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--lifetime", type=float, default=600, help="seconds before it stops by itself")
    args = ap.parse_args()
    if args.cert and args.key:
        cert_path, key_path = args.cert, args.key
    else:
        cert_path, key_path = dev_certificate(tempfile.mkdtemp(prefix="wt-bridge-"))
    port = args.port or free_udp_port()
    config = QuicConfiguration(alpn_protocols=H3_ALPN, is_client=False, max_datagram_frame_size=65536)
    config.load_cert_chain(cert_path, key_path)
    await serve("127.0.0.1", port, configuration=config, create_protocol=Bridge)
    print(f"ready {port} {cert_hash(cert_path)}", flush=True)
    await asyncio.sleep(args.lifetime)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
