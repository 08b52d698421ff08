"""Who is asking: the network a request comes from, for limits per client.

Behind proxies (a Hugging Face Space, Azure Container Apps' ingress) the connection comes from the last
proxy, and each proxy appends the address it was connected from to X-Forwarded-For. A client can write
anything into that header before the first proxy, so only the entries the trusted proxies appended count:
with N proxies the client is the Nth entry from the right.
"""

from __future__ import annotations

import ipaddress

IPV6_CLIENT_PREFIX = 64  # one subscriber's IPv6 network: a client may hold every address in it


def client_network(peer: str | None, forwarded_for: str | None, trusted_proxies: int) -> str | None:
    """The client's network ("203.0.113.7", "2001:db8:1:2::/64"); the connection's peer where no proxy is
    trusted or the header is shorter than the proxies in front (a misconfiguration, not the client's word);
    None if neither is an address."""
    entries = [entry.strip() for entry in (forwarded_for or "").split(",") if entry.strip()]
    address = entries[-trusted_proxies] if 0 < trusted_proxies <= len(entries) else peer
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


def request_network(request, trusted_proxies: int) -> str | None:
    """`client_network` of a Gradio request (None outside a request: a direct call)."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    headers = getattr(request, "headers", None) or {}
    return client_network(getattr(client, "host", None), headers.get("x-forwarded-for"), trusted_proxies)
