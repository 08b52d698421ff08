"""Who is asking: the network a request comes from, for limits per client.

Behind proxies (a Hugging Face Space, Azure Container Apps' ingress) the connection comes from the last
proxy, and each proxy appends the address it was connected from to X-Forwarded-For. A client can write
anything into that header before the first proxy, so only the entries the trusted proxies appended count:
with N proxies the client is the Nth entry from the right. (Uvicorn, under Gradio, already rewrites the
connection's address from that header when the connection comes from $FORWARDED_ALLOW_IPS, by default
127.0.0.1: never set that to "*", which makes the leftmost entry, the client's own words, the address.)
"""

from __future__ import annotations

import ipaddress
import re

IPV6_CLIENT_PREFIX = 48  # a tunnel broker hands anyone a /48: every /64 in it is one client's
UNKNOWN_NETWORK = "unknown"  # an address that cannot be read: such requests are counted together, not let off


def client_network(peer: str | None, forwarded_for: str | None, trusted_proxies: int) -> str:
    """The client's network ("203.0.113.7", "2001:db8:1::/48"); the connection's peer where no proxy is
    trusted or the header is shorter than the proxies in front (a misconfiguration, not the client's word);
    UNKNOWN_NETWORK where that is no address."""
    entries = [entry.strip() for entry in (forwarded_for or "").split(",") if entry.strip()]
    address = entries[-trusted_proxies] if 0 < trusted_proxies <= len(entries) else peer
    try:
        ip = ipaddress.ip_address(without_port(address or ""))
    except ValueError:
        return UNKNOWN_NETWORK
    if ip.version == 6:  # an IPv4 host behind a transition address is that IPv4 host
        ip = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or ip
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


def without_port(address: str) -> str:
    """"203.0.113.7:5678" -> "203.0.113.7", "[2001:db8::1]:443" -> "2001:db8::1" (some proxies add the port)."""
    address = address.strip()
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::\d+)?", address)
    if bracketed:
        return bracketed.group(1)
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def request_network(request, trusted_proxies: int) -> str | None:
    """`client_network` of a Gradio request (None outside a request: a direct call). Every X-Forwarded-For
    line counts, joined in order, as uvicorn joins them: a proxy that adds a line of its own instead of
    appending must not leave the client's line as the one read."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    headers = getattr(request, "headers", None) or {}
    lines = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else [headers.get("x-forwarded-for")]
    return client_network(getattr(client, "host", None), ",".join(line for line in lines if line), trusted_proxies)
