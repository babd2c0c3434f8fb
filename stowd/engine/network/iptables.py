"""stowd's iptables rules, all in chains of its own (PREFIX-…), jumped to from the built-ins.

filter:
  FORWARD → P-FORWARD: first → P-ISOLATION-1 (traffic between two of stowd's bridges is
            dropped, as Docker isolates its networks), then per bridge: replies, published
            ports (ctstate DNAT), container to container, and container to the world
            accepted. A host running dockerd has FORWARD's policy at DROP with bridge
            netfilter on; these accepts are what let stowd's traffic through.
  INPUT   → P-INPUT: packets from a bridge to 127.0.0.0/8 that are not replies are
            dropped (route_localnet is on for stowd's bridges so 127.0.0.1 can be DNATed
            to a container; this keeps containers off the host's loopback services).
nat:
  PREROUTING, OUTPUT (to local addresses) → P-DNAT: one DNAT rule per published port,
            tagged with the container's ID.
  POSTROUTING → P-POSTROUTING: per bridge, MASQUERADE for the subnet going out, for
            127.0.0.1 DNATed into the bridge, and for hairpin (container → its own
            published port).

Every rule carries a comment tag (`net <bridge>` or `ctr <id>`), so rules are found by tag
and removed by what `iptables -S` prints: idempotent, and a crash half-way is repaired by
running the same call again. All calls go through iptables(-restore) -w, under one lock.

IPv6 networks get the same chains and rules from ip6tables (a Firewall with ipv6=True), made
when the first IPv6 network is set up, without the 127.0.0.0/8 ones: there is no
route_localnet for ::1, so local traffic to [::1] is left out of P-DNAT (as dockerd's
`! -d ::1/128`) and meets the port's reserving socket, which refuses it.
"""

import logging
import subprocess
import threading
from collections.abc import Iterable

from stowd.engine.errors import SystemError_
from stowd.engine.network.ports import Binding

log = logging.getLogger("stowd.network")

_lock = threading.Lock()


def _run(args: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemError_(f"{args[0]}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _list(cmd: str, table: str, chain: str | None = None) -> list[str]:
    args = [cmd, "-w", "-t", table, "-S"] + ([chain] if chain else [])
    return _run(args).splitlines()


def _restore(cmd: str, table: str, lines: list[str]) -> None:
    if lines:
        _run([f"{cmd}-restore", "-w", "--noflush"],
             f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n")


def _tag(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _deletes(lines: Iterable[str]) -> list[str]:
    return ["-D" + line[2:] for line in lines if line.startswith("-A ")]


class Firewall:
    def __init__(self, prefix: str, ipv6: bool = False) -> None:
        self.prefix = prefix
        self.ipv6 = ipv6
        self.cmd = "ip6tables" if ipv6 else "iptables"
        self.forward = f"{prefix}-FORWARD"
        self.iso1 = f"{prefix}-ISOLATION-1"
        self.iso2 = f"{prefix}-ISOLATION-2"
        self.input = f"{prefix}-INPUT"
        self.dnat = f"{prefix}-DNAT"
        self.postrouting = f"{prefix}-POSTROUTING"

    # base chains and jumps -------------------------------------------------------------------

    def _list(self, table: str, chain: str | None = None) -> list[str]:
        return _list(self.cmd, table, chain)

    def _restore(self, table: str, lines: list[str]) -> None:
        _restore(self.cmd, table, lines)

    def _base(self) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
        """table → (our chains, [(rule as -S prints it, how to add it)])."""
        if self.ipv6:
            local = "! -d ::1/128 -m addrtype --dst-type LOCAL"
            return {
                "filter": ([self.forward, self.iso1, self.iso2], [
                    (f"-A FORWARD -j {self.forward}", f"-I FORWARD 1 -j {self.forward}"),
                    (f"-A {self.forward} -j {self.iso1}", f"-I {self.forward} 1 -j {self.iso1}"),
                ]),
                "nat": ([self.dnat, self.postrouting], [
                    (f"-A PREROUTING -m addrtype --dst-type LOCAL -j {self.dnat}",) * 2,
                    (f"-A OUTPUT {local} -j {self.dnat}",) * 2,
                    (f"-A POSTROUTING -j {self.postrouting}",) * 2,
                ]),
            }
        return {
            "filter": ([self.forward, self.iso1, self.iso2, self.input], [
                (f"-A FORWARD -j {self.forward}", f"-I FORWARD 1 -j {self.forward}"),
                (f"-A INPUT -j {self.input}", f"-I INPUT 1 -j {self.input}"),
                (f"-A {self.forward} -j {self.iso1}", f"-I {self.forward} 1 -j {self.iso1}"),
            ]),
            "nat": ([self.dnat, self.postrouting], [
                (f"-A PREROUTING -m addrtype --dst-type LOCAL -j {self.dnat}",) * 2,
                (f"-A OUTPUT -m addrtype --dst-type LOCAL -j {self.dnat}",) * 2,
                (f"-A POSTROUTING -j {self.postrouting}",) * 2,
            ]),
        }

    def ensure_base(self) -> None:
        with _lock:
            for table, (chains, jumps) in self._base().items():
                current = set(self._list(table))
                lines = [f"-N {c}" for c in chains if f"-N {c}" not in current]
                lines += [add for shown, add in jumps if shown not in current]
                self._restore(table, lines)

    def remove_all(self) -> None:
        """Every rule and chain of this prefix, and the jumps to them."""
        with _lock:
            for table, (chains, _) in self._base().items():
                current = self._list(table)
                ours = set(chains)
                lines = [
                    "-D" + line[2:] for line in current
                    if line.startswith("-A ") and line.split()[1] not in ours
                    and line.split()[-1] in ours]
                lines += [f"-F {c}" for c in chains if f"-N {c}" in current]
                lines += [f"-X {c}" for c in chains if f"-N {c}" in current]
                self._restore(table, lines)

    def present(self) -> bool:
        with _lock:
            return f"-N {self.forward}" in self._list("filter")

    # networks ----------------------------------------------------------------------------

    def network_rules(self, bridge: str, subnet: str, internal: bool) -> dict[str, list[str]]:
        """The rules of one bridge network, exactly as `iptables -S` prints them."""
        t = _tag(f"net {bridge}")
        f: list[str] = []
        if internal:
            f += [f"-A {self.iso1} -i {bridge} ! -o {bridge} {t} -j DROP",
                  f"-A {self.iso1} ! -i {bridge} -o {bridge} {t} -j DROP"]
        else:
            f += [f"-A {self.iso1} -i {bridge} ! -o {bridge} {t} -j {self.iso2}",
                  f"-A {self.iso2} -o {bridge} {t} -j DROP"]
        f += [f"-A {self.forward} -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED {t} "
              "-j ACCEPT",
              f"-A {self.forward} -i {bridge} -o {bridge} {t} -j ACCEPT"]
        if not internal:
            f += [f"-A {self.forward} -o {bridge} -m conntrack --ctstate DNAT {t} -j ACCEPT",
                  f"-A {self.forward} -i {bridge} ! -o {bridge} {t} -j ACCEPT"]
        n = []
        if not self.ipv6:  # 127.0.0.1 DNATed into the bridge (route_localnet): IPv4 only
            f += [f"-A {self.input} -d 127.0.0.0/8 -i {bridge} -m conntrack ! --ctstate "
                  f"RELATED,ESTABLISHED {t} -j DROP"]
            n += [f"-A {self.postrouting} -s 127.0.0.0/8 -o {bridge} {t} -j MASQUERADE"]
        n += [f"-A {self.postrouting} -s {subnet} -o {bridge} -m conntrack --ctstate DNAT {t} "
              "-j MASQUERADE"]
        if not internal:
            n += [f"-A {self.postrouting} -s {subnet} ! -o {bridge} {t} -j MASQUERADE"]
        return {"filter": f, "nat": n}

    def ensure_network(self, bridge: str, subnet: str, internal: bool) -> None:
        wanted = self.network_rules(bridge, subnet, internal)
        tag = _tag(f"net {bridge}")
        with _lock:
            for table, rules in wanted.items():
                have = [line for line in self._list(table) if tag in line]
                if have == rules:
                    continue
                self._restore(table, _deletes(have) + rules)

    def remove_network(self, bridge: str) -> None:
        tag = _tag(f"net {bridge}")
        with _lock:
            for table in ("filter", "nat"):
                self._restore(table, _deletes(line for line in self._list(table) if tag in line))

    # published ports ---------------------------------------------------------------------

    def port_rules(self, cid: str, container_ip: str, bindings: list[Binding]) -> list[str]:
        t = _tag(f"ctr {cid}")
        out = []
        host_bits, to = (128, f"[{container_ip}]") if self.ipv6 else (32, container_ip)
        for b in bindings:
            dest = "" if b.host_ip in ("", "0.0.0.0", "::") else f"-d {b.host_ip}/{host_bits} "
            out.append(f"-A {self.dnat} {dest}-p {b.proto} -m {b.proto} --dport {b.host_port} "
                       f"{t} -j DNAT --to-destination {to}:{b.container_port}")
        return out

    def add_ports(self, cid: str, container_ip: str, bindings: list[Binding]) -> None:
        rules = self.port_rules(cid, container_ip, bindings)
        if not rules:
            return
        with _lock:
            try:
                self._restore("nat", rules)
            except SystemError_:
                # A leftover of an earlier life in the way? Start from a clean slate.
                self._remove_ports_locked(cid)
                self._restore("nat", rules)

    def add_lines(self, lines: list[str]) -> None:
        """Rules recorded earlier by port_rules(), added back."""
        with _lock:
            self._restore("nat", lines)

    def remove_ports(self, cid: str, expected: list[str] | None = None) -> None:
        """Drop a container's DNAT rules; `expected` (what add_ports wrote) saves a listing."""
        with _lock:
            if expected:
                try:
                    self._restore("nat", _deletes(expected))
                    return
                except SystemError_:
                    pass  # some were gone already: find the others by their tag
            self._remove_ports_locked(cid)

    def _remove_ports_locked(self, cid: str) -> None:
        tag = _tag(f"ctr {cid}")
        self._restore("nat", _deletes(line for line in self._list("nat", self.dnat) if tag in line))

    def port_owners(self) -> set[str]:
        """IDs of the containers that have DNAT rules (for the start-up sweep)."""
        with _lock:
            try:
                lines = self._list("nat", self.dnat)
            except SystemError_:
                return set()
        owners = set()
        for line in lines:
            marker = '--comment "ctr '
            if marker in line:
                owners.add(line.split(marker, 1)[1].split('"', 1)[0])
        return owners
