"""Network enclaves: one network namespace per researcher in a project, which holds their
workspace server of that project (and all it starts: kernels, Dask clusters), joined to the
machine by a veth pair.

One per member rather than one per project: co-members share the project's data but not their
accounts, and a shared namespace would let one bind the address and port another's server is
about to take (the hub's proxy would then send that researcher's browser to the impostor), or
reach the ports of another's Dask cluster. So no two workspaces share a network.

The enclave of member ``m`` of project ``p`` (in TRE home ``h``) is named after a digest of the
three, so two homes on one machine never share one:

- the namespace ``tre-<digest>`` (``/run/netns``), whose end of the pair is ``eth0``, with the
  second address of a /30 of :data:`DEFAULT_NETWORK` (a setting); ``lo`` is up;
- the machine's end ``tre-e<digest>``, with the first address (the enclave's gateway);
- two nftables tables, made and replaced whole (``nft -f``, atomically):

  inside the namespace (``inet tre``), policy drop: in, only what the machine's end sends (the
  hub's proxy, and the hub checking the server) and loopback; out, only to the gateway on the
  hub API's and the portal's ports, and loopback. Everything else is dropped and counted.

  on the machine (``inet tre_e<digest>``): what the enclave sends to its gateway on those two
  ports is sent on to ``127.0.0.1`` (DNAT: the hub and the portal stay on loopback), and
  nothing else it sends is accepted or forwarded; only the TRE's services account (the hub and
  its proxy) opens connections into it. Each drop is counted.

IPv6 is off on both ends. Enclaves are made at a workspace's first start (by the privileged
helper, as root) and removed when the member leaves the project and at its closure; a record of
each (its home, project and member) is kept in :data:`RECORDS` so that an operator, and the
tests, find them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tre.exceptions import ConfigError, ServiceUnavailable

IP = "/usr/sbin/ip"
NFT = "/usr/sbin/nft"
NSENTER = "/usr/bin/nsenter"
SYSCTL = "/usr/sbin/sysctl"
NETNS = Path("/run/netns")
#: Where each enclave's record (home, project and member) is kept, by digest.
RECORDS = Path("/run/tre/enclaves")
DEFAULT_NETWORK = "10.213.0.0/16"
INSIDE = "eth0"


@dataclasses.dataclass(frozen=True)
class Enclave:
    home: str
    project: str
    member: str
    digest: str
    #: The enclave's /30: its gateway (the machine's end) and its address (the namespace's).
    subnet: ipaddress.IPv4Network

    @property
    def namespace(self) -> str:
        return f"tre-{self.digest}"

    @property
    def link(self) -> str:
        return f"tre-e{self.digest}"

    @property
    def table(self) -> str:
        return f"tre_e{self.digest}"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def address(self) -> str:
        return str(self.subnet.network_address + 2)

    def inside(self, command: Sequence[str]) -> list[str]:
        """``command`` run in the enclave's network namespace (and no other of its
        namespaces)."""
        return [NSENTER, f"--net={NETNS / self.namespace}", "--", *command]


def digest_of(home: Path | str, project: str, member: str) -> str:
    return hashlib.sha256(f"{Path(home)}\0{project}\0{member}".encode()).hexdigest()[:10]


def _run(command: Sequence[str], stdin: str | None = None) -> str:
    done = subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise ServiceUnavailable(
            f"Setting up a project's network enclave failed ({Path(command[0]).name}: "
            f"{done.stderr.strip()[:300]}): ask the machine's administrator (the TRE needs "
            "iproute2 and nftables, and root)."
        )
    return done.stdout


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One change of enclaves at a time on the machine (their addresses are the machine's)."""
    RECORDS.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(RECORDS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _records() -> dict[str, dict[str, str]]:
    found = {}
    for path in RECORDS.glob("*.json") if RECORDS.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            found[path.stem] = json.loads(path.read_text())
    return found


def _subnets_in_use(network: ipaddress.IPv4Network) -> dict[str, ipaddress.IPv4Network]:
    """The /30 of each of the machine's enclave links, by link name."""
    used = {}
    for link in json.loads(_run([IP, "-j", "-4", "addr", "show"]) or "[]"):
        for info in link.get("addr_info", []):
            subnet = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if subnet.subnet_of(network):
                used[link["ifname"]] = subnet
    return used


def find(
    home: Path | str, project: str, member: str, network: str = DEFAULT_NETWORK
) -> Enclave | None:
    """The enclave of ``member`` in ``project`` if it exists."""
    digest = digest_of(home, project, member)
    subnet = _subnets_in_use(_network(network)).get(f"tre-e{digest}")
    if subnet is None or not (NETNS / f"tre-{digest}").exists():
        return None
    return Enclave(str(home), project, member, digest, subnet)


def _network(value: str) -> ipaddress.IPv4Network:
    from tre.config import private_network  # the setting's own check

    try:
        return ipaddress.IPv4Network(private_network(value))
    except ValueError as e:
        raise ConfigError(f"TRE_ENCLAVE_NETWORK={value!r}: {e}.") from None


def ensure(
    home: Path | str,
    project: str,
    member: str,
    ports: Sequence[int],
    network: str = DEFAULT_NETWORK,
) -> Enclave:
    """The enclave of ``member`` in ``project``, made if missing, its rules (re)written to let
    out only ``ports`` (the hub API's and the portal's, on loopback). Idempotent."""
    if not ports or not all(isinstance(p, int) and 1024 <= p < 65536 for p in ports):
        raise ConfigError(f"The hub's and the portal's ports must be unprivileged: {ports}")
    net = _network(network)
    with _locked():
        digest = digest_of(home, project, member)
        used = _subnets_in_use(net)
        subnet = used.get(f"tre-e{digest}")
        if subnet is None:
            taken = set(used.values())
            subnet = next((s for s in list(net.subnets(new_prefix=30))[1:] if s not in taken), None)
            if subnet is None:
                raise ServiceUnavailable(
                    f"Every address of TRE_ENCLAVE_NETWORK ({net}) is taken by an enclave: "
                    "close projects, or give a larger network."
                )
        enclave = Enclave(str(home), project, member, digest, subnet)
        if not (NETNS / enclave.namespace).exists() or f"tre-e{digest}" not in used:
            _remove(enclave)  # what a half-made one left
            _make(enclave)
        _rules(enclave, sorted(set(ports)))
        record = {"home": str(home), "project": project, "member": member}
        (RECORDS / f"{digest}.json").write_text(json.dumps(record))
        return enclave


def _make(e: Enclave) -> None:
    _run([IP, "netns", "add", e.namespace])
    _run([IP, "link", "add", e.link, "type", "veth", "peer", "name", INSIDE, "netns", e.namespace])
    for key in (
        f"net.ipv6.conf.{e.link}.disable_ipv6=1",
        f"net.ipv4.conf.{e.link}.route_localnet=1",
    ):
        _run([SYSCTL, "-q", "-w", key])
    _run([IP, "addr", "add", f"{e.gateway}/30", "dev", e.link])
    _run([IP, "link", "set", e.link, "up"])
    _run(e.inside([SYSCTL, "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]))
    _run(e.inside([SYSCTL, "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]))
    _run([IP, "-n", e.namespace, "addr", "add", f"{e.address}/30", "dev", INSIDE])
    _run([IP, "-n", e.namespace, "link", "set", INSIDE, "up"])
    _run([IP, "-n", e.namespace, "link", "set", "lo", "up"])
    _run([IP, "-n", e.namespace, "route", "add", "default", "via", e.gateway])


def _rules(e: Enclave, ports: list[int]) -> None:
    from tre.privileged import accounts

    allowed = ", ".join(str(p) for p in ports)
    services = accounts.uid(accounts.SERVICE) if accounts.exists(accounts.SERVICE) else 0
    # The machine's side: replaced whole (a table added then deleted in one transaction is
    # created empty, so the delete never fails).
    host = f"""
table inet {e.table}
delete table inet {e.table}
table inet {e.table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{e.link}" ip daddr {e.gateway} tcp dport {{ {allowed} }} dnat ip to 127.0.0.1
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{e.link}" ct state established,related accept
    iifname "{e.link}" ct status dnat ip daddr 127.0.0.1 tcp dport {{ {allowed} }} accept
    iifname "{e.link}" counter drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{e.link}" counter drop
    oifname "{e.link}" counter drop
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    oifname "{e.link}" ct state established,related accept
    oifname "{e.link}" meta skuid {{ 0, {services} }} tcp dport 1024-65535 accept
    oifname "{e.link}" counter drop
  }}
}}
"""
    inside = f"""
table inet tre
delete table inet tre
table inet tre {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    iifname "{INSIDE}" ip saddr {e.gateway} tcp dport 1024-65535 accept
    counter drop
  }}
  chain output {{
    type filter hook output priority filter; policy drop;
    oif lo accept
    ct state established,related accept
    oifname "{INSIDE}" ip daddr {e.gateway} tcp dport {{ {allowed} }} accept
    counter drop
  }}
}}
"""
    _run([NFT, "-f", "-"], host)
    _run(e.inside([NFT, "-f", "-"]), inside)


def dropped(e: Enclave) -> int:
    """How many packets the enclave's rules have dropped (inside and on the machine)."""
    total = 0
    for listing in (
        _run([NFT, "-j", "list", "table", "inet", e.table]),
        _run(e.inside([NFT, "-j", "list", "table", "inet", "tre"])),
    ):
        for item in json.loads(listing)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                total += expr.get("counter", {}).get("packets", 0)
    return total


def _remove(e: Enclave) -> None:
    for command in (
        [NFT, "delete", "table", "inet", e.table],
        [IP, "netns", "del", e.namespace],  # its end of the pair goes with it, then the other
        [IP, "link", "del", e.link],
    ):
        subprocess.run(command, capture_output=True, check=False, timeout=30)
    (RECORDS / f"{e.digest}.json").unlink(missing_ok=True)


def remove(home: Path | str, project: str, members: Sequence[str] | None = None) -> int:
    """Remove the enclaves of ``members`` of ``project`` (all of the project's with None): their
    namespaces, links, rules and records; how many there were. Their processes must have been
    stopped first (a process keeps a namespace alive)."""
    if members is None:
        members = [m for p, m in of_home(home) if p == project]
    removed = 0
    with _locked():
        for member in members:
            digest = digest_of(home, project, member)
            if (NETNS / f"tre-{digest}").exists() or (RECORDS / f"{digest}.json").exists():
                removed += 1
            unused = ipaddress.IPv4Network("0.0.0.0/30")
            _remove(Enclave(str(home), project, member, digest, unused))
    return removed


def every() -> list[tuple[str, str, str]]:
    """The (home, project, member) of each enclave on this machine (from the records)."""
    return sorted(
        (r["home"], r["project"], r["member"])
        for r in _records().values()
        if isinstance(r, dict) and {"home", "project", "member"} <= r.keys()
    )


def of_home(home: Path | str) -> list[tuple[str, str]]:
    """The (project, member) of each enclave of ``home`` on this machine (from the records)."""
    return [(project, member) for h, project, member in every() if h == str(home)]
