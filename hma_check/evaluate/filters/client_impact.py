"""Filters the client checks use on logs.httpproxy: who is affected, in words, and the Bearer share per protocol."""

from __future__ import annotations

from typing import Any, Iterable

# Where HMA gives clients a token (MAPI/HTTP, EWS, Autodiscover, OAB, ActiveSync): the protocols whose Bearer share
# shows the switch took effect (https://learn.microsoft.com/microsoft-365/enterprise/hybrid-modern-auth-overview).
HMA_PROTOCOLS = ("Mapi", "Ews", "Autodiscover", "Oab", "Eas")
KINDS = ("people", "applications", "all")


def describe_group(group: dict[str, Any]) -> str:
    """'Outlook for Windows 14.0.7268 over Mapi with NTLM'."""
    authentication = group.get("AuthenticationType") or "no authentication"
    return f"{group.get('client') or group.get('family')} over {group.get('Protocol')} with {authentication}"


def client_users(groups: Iterable[dict[str, Any]], kind: str = "people",
                 excluding: Iterable[dict[str, Any]] = ()) -> list[dict[str, str]]:
    """One row per user of ``groups`` (people, applications and service accounts, or all): {user, kind, found},
    ``found`` naming every client, protocol and authentication type that user was seen with and when last.
    Users who also appear in ``excluding`` (the same clients already on Bearer, say) are left out."""
    if kind not in KINDS:
        raise ValueError(f"client_users: kind must be one of {', '.join(KINDS)}")
    skip = {row["user"] for group in excluding for key in ("people", "applications") for row in group.get(key) or []}
    found: dict[str, dict[str, Any]] = {}
    for group in groups:
        for key in ("people", "applications"):
            if kind != "all" and key != kind:
                continue
            for row in group.get(key) or []:
                user = row["user"]
                if user in skip:
                    continue
                entry = found.setdefault(user, {"user": user, "kind": "application or service account"
                                                 if key == "applications" else "person", "seen": [], "last": ""})
                entry["seen"].append(f"{describe_group(group)} ({row['requests']} requests)")
                entry["last"] = max(entry["last"], str(row.get("last_seen") or ""))
    out = []
    for user in sorted(found, key=str.casefold):
        entry = found[user]
        last = f"; last seen {entry['last']}" if entry["last"] else ""
        out.append({"user": user, "kind": entry["kind"], "found": "; ".join(sorted(entry["seen"])) + last})
    return out


def client_summary(groups: Iterable[dict[str, Any]], limit: int = 6) -> str:
    """'3 users, 120 requests: Outlook for Windows 14.0.7268 over RpcHttp with NTLM (2 users, 100 requests); ...'."""
    groups = sorted(groups, key=lambda g: (-int(g.get("requests") or 0), describe_group(g)))
    users = {row["user"] for g in groups for key in ("people", "applications") for row in g.get(key) or []}
    requests = sum(int(g.get("requests") or 0) for g in groups)
    parts = [f"{describe_group(g)} ({g.get('users', 0)} users, {g.get('requests', 0)} requests)"
             for g in groups[:limit]]
    more = f"; and {len(groups) - limit} more client groups" if len(groups) > limit else ""
    return f"{len(users)} users, {requests} requests: " + "; ".join(parts) + more


def server_row(servers: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The logs' row for an Exchange server (ServerHostName is the server's name, in any case), or None."""
    wanted = str(name).casefold()
    for row in servers:
        if str(row.get("server", "")).casefold().split(".", 1)[0] == wanted:
            return row
    return None


def bearer_share(daily: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per HMA protocol with authenticated requests since the switch (the first day a Bearer or OAuth request was
    logged; none: the whole window): {Protocol, since, authenticated, modern, share (percent)}. Exchange's own
    monitoring (HealthMailbox probes, which keep Windows authentication) is left out."""
    rows = [r for r in daily if r.get("authenticated") and not r.get("exchange_monitoring")]
    modern_days = [r["date"] for r in rows if r.get("modern_authentication")]
    since = min(modern_days) if modern_days else None
    out = []
    for protocol in HMA_PROTOCOLS:
        mine = [r for r in rows if r.get("Protocol") == protocol and (since is None or r["date"] >= since)]
        authenticated = sum(int(r["requests"]) for r in mine)
        if not authenticated:
            continue
        modern = sum(int(r["requests"]) for r in mine if r.get("modern_authentication"))
        out.append({"Protocol": protocol, "since": since, "authenticated": authenticated, "modern": modern,
                    "share": round(100.0 * modern / authenticated, 1)})
    return out
