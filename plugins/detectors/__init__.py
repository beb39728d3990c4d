"""The built-in protocol detectors, in the order they are asked (ports reorder them per flow)."""

from __future__ import annotations

import importlib

from ..api import Plugin

# (module, class names); server-first and binary protocols with strong signatures first.
_MODULES = [
    ("tls", ["Tls"]),
    ("http", ["Http"]),  # before http2: a port-80 guess is HTTP/1
    ("http2", ["Http2"]),
    ("ssh", ["Ssh"]),
    ("proxy_protocol", ["ProxyProtocol"]),
    ("socks", ["Socks5", "Socks4"]),
    ("postgresql", ["Postgresql"]),
    ("mysql", ["Mysql"]),
    ("redis", ["Redis"]),
    ("mqtt", ["Mqtt"]),
    ("dns", ["Dns"]),
    ("rdp", ["Rdp"]),
    ("smb", ["Smb"]),
    ("mail", ["Smtp", "Imap", "Pop3"]),
    ("ftp", ["Ftp"]),
]

DETECTORS: list[type[Plugin]] = [
    getattr(importlib.import_module(f".{module}", __name__), name)
    for module, names in _MODULES
    for name in names
]
