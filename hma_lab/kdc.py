"""A throwaway MIT Kerberos realm on loopback: the lab's Active Directory KDC, for Kerberos and Negotiate sign-ins.

``Realm("CONTOSO.LOCAL").start()`` makes a realm in a temporary folder (kdb5_util), starts krb5kdc on a free
127.0.0.1 port, and writes a krb5.conf whose default keytab holds the lab's HTTP/<server FQDN> service keys, so
pyspnego's acceptor in the lab finds them with nothing but KRB5_CONFIG. Nothing of the machine's own configuration
is read or written: ``environ()`` names the realm's files, and the caller puts them in the environment of the
processes that use the realm. ``stop()`` ends the KDC (the one process it started) and removes the folder.

Needs MIT Kerberos' server programs (Debian/Ubuntu: krb5-kdc and krb5-admin-server; macOS: Homebrew's krb5).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/usr/lib/mit/sbin", "/opt/homebrew/opt/krb5/sbin",
               "/usr/local/opt/krb5/sbin")
TOOLS = ("kdb5_util", "kadmin.local", "krb5kdc")
INSTALL_HINT = ("MIT Kerberos' KDC is not installed (kdb5_util, kadmin.local, krb5kdc): on Debian or Ubuntu "
                "apt-get install krb5-kdc krb5-admin-server; on macOS brew install krb5")


class RealmError(Exception):
    """The realm could not be made or started; the message is one line a person can act on."""


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in SEARCH_PATH:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def kdc_available() -> bool:
    return all(find_tool(tool) for tool in TOOLS)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Realm:
    """One realm, one KDC process, one keytab of service keys. Principals can be added while the KDC runs."""

    def __init__(self, name: str = "CONTOSO.LOCAL", *, domains: tuple[str, ...] = ()) -> None:
        self.name = name.upper()
        self.domains = tuple(dict.fromkeys((*domains, name.lower())))   # DNS domains whose hosts are in the realm
        self.folder: Path | None = None
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._services: set[str] = set()

    # ------------------------------------------------------------------------------------------ files

    @property
    def krb5_conf(self) -> Path:
        return self._path("krb5.conf")

    @property
    def keytab(self) -> Path:
        return self._path("services.keytab")

    @property
    def ccache(self) -> Path:
        return self._path("ccache")

    def _path(self, name: str) -> Path:
        if self.folder is None:
            raise RealmError("the realm has not been started")
        return self.folder / name

    def environ(self) -> dict[str, str]:
        """What a process needs to use this realm: its krb5.conf, its own ticket cache, a replay cache in its folder
        (MIT's acceptor would otherwise write one under /var/tmp)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5CCNAME": f"FILE:{self.ccache}",
                "KRB5RCACHENAME": f"file2:{self._path('replay.rcache2')}"}

    def client_conf(self, path: Path, *, kdc_port: int | None = None, timesync: bool = True) -> Path:
        """A krb5.conf for a client of this realm, written to ``path``: another KDC port (one that does not answer,
        a second KDC) or, with ``timesync=False``, without MIT's correction for a clock that differs from the KDC's
        (as Heimdal and Windows clients behave)."""
        path.write_text(self._krb5_conf(kdc_port or self.port, timesync=timesync), encoding="utf-8")
        return path

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> "Realm":
        tools = {tool: find_tool(tool) for tool in TOOLS}
        if not all(tools.values()):
            raise RealmError(INSTALL_HINT)
        self._tools = {name: str(path) for name, path in tools.items()}
        self.folder = Path(tempfile.mkdtemp(prefix="hma-check-kdc-"))
        try:
            self.port = free_port()
            (self.folder / "kdc.conf").write_text(self._kdc_conf(self.port), encoding="utf-8")
            self.krb5_conf.write_text(self._krb5_conf(self.port), encoding="utf-8")
            (self.folder / "kadm5.acl").write_text("", encoding="utf-8")
            self._run("kdb5_util", "create", "-s", "-r", self.name, "-P", secrets.token_urlsafe(24))
            self._process = self.start_kdc(self.folder / "kdc.conf")
            self._wait_for(self.port, self._process)
        except BaseException:
            self.stop()
            raise
        return self

    def start_kdc(self, kdc_conf: Path, *, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """krb5kdc in the foreground (-n) in its own process group, so this process owns it and ends it by its id."""
        env = {**self._tool_env(kdc_conf), **(extra_env or {})}
        return subprocess.Popen([self._tools["krb5kdc"], "-n", "-r", self.name], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)

    def second_kdc(self, *, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
        """Another KDC process on the same database and its own port (a test gives it a skewed clock with
        libfaketime's LD_PRELOAD and FAKETIME in ``extra_env``)."""
        assert self.folder is not None
        port = free_port()
        conf = self.folder / f"kdc-{port}.conf"
        conf.write_text(self._kdc_conf(port), encoding="utf-8")
        process = self.start_kdc(conf, extra_env=extra_env)
        try:
            self._wait_for(port, process)
        except BaseException:
            stop_process(process)
            raise
        return process, port

    @classmethod
    def attach(cls, folder: Path) -> "Realm":
        """The realm another process started in ``folder`` (to add principals; that process owns the KDC)."""
        text = (folder / "krb5.conf").read_text(encoding="utf-8")
        name = re.search(r"default_realm = (\S+)", text)
        port = re.search(r"kdc = 127\.0\.0\.1:(\d+)", text)
        if name is None or port is None:
            raise RealmError(f"{folder} holds no realm made by hma-check")
        realm = cls(name.group(1))
        realm.folder, realm.port = folder, int(port.group(1))
        realm._tools = {tool: find_tool(tool) or tool for tool in TOOLS}
        realm._owner = False
        return realm

    @contextmanager
    def activated(self) -> Iterator["Realm"]:
        """This process uses the realm (KRB5_CONFIG and the rest of environ()) until the block ends."""
        saved = {key: os.environ.get(key) for key in self.environ()}
        os.environ.update(self.environ())
        try:
            yield self
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def stop(self) -> None:
        if not getattr(self, "_owner", True):
            return      # attached: the process that started the realm stops it
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "Realm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ principals

    def add_user(self, name: str, password: str) -> str:
        """A user principal (name@REALM) with this password; an existing one gets the password. Returns the
        principal's name."""
        principal = f"{name.split('@', 1)[0]}@{self.name}"
        # Pre-authentication required, as Active Directory requires it of every account by default: a wrong password
        # is then refused by the KDC (Preauthentication failed) and a skewed clock is seen there.
        if "already exists" in self._kadmin([f"addprinc +requires_preauth -pw {_quoted(password)} {principal}"],
                                            secret=password, tolerate="already exists"):
            self._kadmin([f"cpw -pw {_quoted(password)} {principal}"], secret=password)
        return principal

    def add_services(self, hosts: list[str], service: str = "HTTP") -> None:
        """service/host principals with random keys, exported to the realm's keytab (the server's machine keys)."""
        wanted = [f"{service}/{host.lower()}@{self.name}" for host in hosts]
        new = [p for p in dict.fromkeys(wanted) if p not in self._services]
        if not new:
            return
        commands = []
        for principal in new:
            commands += [f"addprinc -randkey {principal}", f"ktadd -k {self.keytab} {principal}"]
        self._kadmin(commands)
        self._services.update(new)

    # ------------------------------------------------------------------------------------------ plumbing

    def _kdc_conf(self, port: int) -> str:
        folder = self.folder
        return (f"[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n\n"
                f"[realms]\n {self.name} = {{\n  database_name = {folder}/principal\n"
                f"  key_stash_file = {folder}/stash\n  acl_file = {folder}/kadm5.acl\n"
                "  max_life = 10h 0m 0s\n  max_renewable_life = 1d 0h 0m 0s\n"
                "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n }\n\n"
                f"[logging]\n kdc = FILE:{folder}/kdc.log\n")

    def _krb5_conf(self, port: int, *, timesync: bool = True) -> str:
        # No DNS at all: the KDC is named, host names are taken as given (an IP address stays an IP address, as
        # Windows does), and TCP only, so a KDC that does not answer fails at once instead of after UDP retries.
        mapping = "".join(f" .{domain} = {self.name}\n {domain} = {self.name}\n" for domain in self.domains)
        return ("[libdefaults]\n"
                f" default_realm = {self.name}\n"
                " dns_lookup_kdc = false\n dns_lookup_realm = false\n"
                " dns_canonicalize_hostname = false\n rdns = false\n"
                " udp_preference_limit = 1\n"
                f" kdc_timesync = {1 if timesync else 0}\n"
                f" default_keytab_name = FILE:{self.folder}/services.keytab\n\n"
                f"[realms]\n {self.name} = {{\n  kdc = 127.0.0.1:{port}\n }}\n\n"
                f"[domain_realm]\n{mapping}")

    def _tool_env(self, kdc_conf: Path | None = None) -> dict[str, str]:
        assert self.folder is not None
        keep = {key: value for key, value in os.environ.items() if not key.startswith("KRB5")}
        return {**keep, "KRB5_CONFIG": str(self.krb5_conf),
                "KRB5_KDC_PROFILE": str(kdc_conf or self.folder / "kdc.conf")}

    def _run(self, tool: str, *args: str, stdin: str | None = None, secret: str | None = None) -> str:
        done = subprocess.run([self._tools[tool], *args], input=stdin, capture_output=True, text=True,
                              env=self._tool_env(), timeout=60)
        if done.returncode != 0:
            raise RealmError(f"{tool} failed ({done.returncode}): {_hidden(done.stderr or done.stdout, secret)}")
        return done.stderr

    def _kadmin(self, commands: list[str], *, secret: str | None = None, tolerate: str | None = None) -> str:
        # One kadmin.local for many commands (read from stdin): a 200-server lab adds its principals in one go.
        # kadmin.local exits 0 whatever a command did; a failed command says "... while <doing>" on stderr.
        errors = self._run("kadmin.local", "-r", self.name, stdin="\n".join(commands) + "\nquit\n", secret=secret)
        failed = [line for line in errors.splitlines() if " while " in line and not (tolerate and tolerate in line)]
        if failed:
            raise RealmError(f"kadmin.local: {_hidden(failed[0], secret)}")
        return errors

    @staticmethod
    def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                error = (process.stderr.read() if process.stderr else b"").decode("utf-8", "replace")
                raise RealmError(f"krb5kdc exited with {process.returncode}: {' '.join(error.split())[:300]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        stop_process(process)
        raise RealmError(f"krb5kdc did not listen on 127.0.0.1:{port} within {timeout:g} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """End one process this module started (by its id), waiting for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    try:
        os.killpg(process.pid, signal.SIGKILL)   # its own session (start_new_session): anything it left behind
    except OSError:
        pass
    if process.stderr is not None:
        process.stderr.close()


def _hidden(text: str, secret: str | None) -> str:
    text = " ".join(text.split())[:300]
    return text.replace(secret, "********") if secret else text


def _quoted(text: str) -> str:
    """A kadmin argument: kadmin splits on blanks and honours double quotes."""
    if any(ch in text for ch in '"\n'):
        raise RealmError("a lab password must not contain a double quote or a line break")
    return f'"{text}"'
