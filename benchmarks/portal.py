"""Portal latency under load: an output checker's queue and a request, with 10,000 export
requests in the database, 20 concurrent clients on loopback.

    .venv/bin/python benchmarks/portal.py [--requests 10000] [--clients 20] [--calls 1000]

A throw-away TRE home is built as ``make demo`` builds one (synthetic deliveries, ingest, the
example projects approved and provisioned), with its own real Keycloak and the portal served as
``tre portal up`` serves it (``TRE_PORTAL_WORKERS`` processes given their connections in turn).
A few export requests are made through the airlock as a researcher would (a checked table,
submitted); the rest of the 10,000 are copies of those rows inserted in bulk (their audit events
are not written: the audit log is not read by these pages).
Every request waits for review, each with two outputs, half of them already voted on by
another checker: the worst case for the queue.

Each client is one keep-alive HTTP/1.1 connection (a minimal asyncio client, see
:class:`Client`) sending its calls one after another; latency is measured per call, client
side (so it includes the client's own time on the same 2 cores). Scenarios:

* ``baseline``: ``GET /api/v1/me``, the cheapest authenticated call (token check, no database);
* ``queue (API)`` ``GET /api/v1/review/queue`` and ``queue (page)`` ``GET /review``;
* ``request (API)`` ``GET /api/v1/requests/{id}`` and ``request (page)`` ``GET /requests/{id}``
  for random requests, as an output checker (tables, reasons, earlier releases).

Pages use a session from a real Keycloak login; the API a bearer token. The last line is JSON.
Goal: p95 < 100 ms for the queue and the request page.

With ``--heavy N`` (5 by default), one more scenario: ``request (page), heavy outputs``, the
request page measured while N researchers' outputs near the size limit (tables of about 4,000
cells with margins, each many seconds of secondary suppression) are being checked through the
API. Goal: p95 < 200 ms. Run as root, as `tre up` runs the TRE: the portal as ``tre``, the
outputs in workers of the project's account forked by the privileged helper.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(settings, requests: int) -> list[int]:
    """The demo home, a few real requests, then copies up to ``requests``. Return their ids."""
    import sqlalchemy as sa

    from tre import airlock, demo, outputs
    from tre.db import Database
    from tre.home import Home
    from tre.outputs import specs
    from tre.people import local_person

    demo.prepare(settings, pupils=500, say=lambda line: None)
    db, home = Database.of_settings(settings), Home(settings.home)
    alice = local_person("alice")
    tables = [
        specs.parse({"name": name, "kind": "table", "dataset": "pupils", "rows": rows})
        for name, rows in (("by sex", ["sex"]), ("by ethnicity", ["ethnicity"]))
    ]
    made = [outputs.check(home, db, "asthma-ks4", t, alice)[0].id for t in tables]
    real = []
    for n in range(4):
        request = airlock.create(db, "asthma-ks4", f"Tables for chapter {n + 1}", alice)
        for output_id in made:
            airlock.put_output(db, request.id, output_id, f"table {output_id} of the paper", alice)
        airlock.submit(home, db, request.id, alice)
        real.append(request.id)
    airlock.review(home, db, real[0], 1, "approve", "fine", local_person("oscar"))
    with db.write() as session:
        row = session.get(airlock.ExportRequest, real[0])
        template = {c.name: getattr(row, c.name) for c in airlock.ExportRequest.__table__.columns}
        slots = session.execute(
            sa.select(airlock.RequestOutput).where(airlock.RequestOutput.request_id == real[0])
        ).scalars()
        slot_rows = [
            {c.name: getattr(s, c.name) for c in airlock.RequestOutput.__table__.columns}
            for s in slots
        ]
        review = session.execute(sa.select(airlock.Review)).scalars().first()
        review_row = {
            c.name: getattr(review, c.name)
            for c in airlock.Review.__table__.columns
            if c.name != "id"
        }
        first = session.execute(sa.select(sa.func.max(airlock.ExportRequest.id))).scalar() + 1
        ids = list(range(first, first + requests - len(real)))
        session.execute(
            sa.insert(airlock.ExportRequest),
            [{**template, "id": i, "title": f"Copy {i}"} for i in ids],
        )
        next_slot = session.execute(sa.select(sa.func.max(airlock.RequestOutput.id))).scalar()
        copies, votes = [], []
        for i in ids:
            for s in slot_rows:
                next_slot += 1
                copies.append({**s, "id": next_slot, "request_id": i})
                if i % 2 == 0:
                    votes.append({**review_row, "request_output_id": next_slot})
        session.execute(sa.insert(airlock.RequestOutput), copies)
        session.execute(sa.insert(airlock.Review), votes)
    db.dispose()
    return real + ids


class Client:
    """One keep-alive HTTP/1.1 connection sending GETs one after another: a minimal client, so
    that the load generator takes little of the CPU it shares with the portal (httpx's
    AsyncClient took about 0.6 of a core for 20 clients here)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        fields = {"Host": parts.netloc, "Connection": "keep-alive", **headers}
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self.reader = self.writer = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.headers}\r\n".encode("latin-1"))
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding":
                chunked = "chunked" in value.lower()
        if not chunked:
            return status, await self.reader.readexactly(length)
        body = b""
        while size := int((await self.reader.readline()).strip(), 16):
            body += await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(make_client, path_of, clients: int, calls: int) -> list[float]:
    latencies: list[float] = []

    async def one(client: Client) -> None:
        for _ in range(calls // clients):
            path = path_of()
            start = time.perf_counter()
            status, body = await client.get(path)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                raise SystemExit(f"GET {path}: {status} {body[:200]!r}")

    pool = [make_client() for _ in range(clients)]
    try:
        await asyncio.gather(*(one(c) for c in pool))
    finally:
        for c in pool:
            c.close()
    return latencies


def figures(latencies: list[float]) -> dict:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "calls": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000, help="calls per scenario")
    parser.add_argument(
        "--heavy", type=int, default=5, help="heavy outputs checked during the last scenario"
    )
    args = parser.parse_args(argv)

    from tre.cli import main as tre
    from tre.config import Settings
    from tre.identity import KeycloakServer, device_login, form_login
    from tre.portal.server import PortalServer
    from tre.privileged import Helper
    from tre.services import free_port

    with tempfile.TemporaryDirectory(prefix="tre-bench-portal-") as tmp:
        environ = {
            **os.environ,
            "TRE_HOME": f"{tmp}/home",
            "TRE_KEYCLOAK_PORT": str(free_port()),
            "TRE_PORTAL_URL": f"http://127.0.0.1:{free_port()}",
            "TRE_KEYCLOAK_SYNC": "off",
        }
        os.chmod(tmp, 0o711)  # noqa: S103 - the TRE's accounts pass through to the home
        settings = Settings.from_environ(environ)
        keycloak = KeycloakServer.from_settings(settings)
        portal = PortalServer.from_settings(settings, environ)
        helper = Helper(settings.home, environ)
        try:
            started = time.perf_counter()
            ids = build(settings, args.requests)
            print(f"{len(ids):,} requests in the database ({time.perf_counter() - started:.0f} s)")
            if os.geteuid() == 0:
                assert tre(["init"], environ) == 0  # built here as root: each part to its owner
                helper.start()
            keycloak.start()
            portal.start()
            url = settings.portal_url
            token = device_login(keycloak.issuer, "olga", settings.demo_password)
            session = form_login(url, "olga", settings.demo_password)
            cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
            session.close()

            def api():
                return Client(url, {"Authorization": f"Bearer {token}"})

            def pages():
                return Client(url, {"Cookie": cookie})

            def any_request() -> str:
                return str(random.choice(ids))

            scenarios = {
                "baseline": (api, lambda: "/api/v1/me"),
                "queue (API)": (api, lambda: "/api/v1/review/queue"),
                "queue (page)": (pages, lambda: "/review"),
                "request (API)": (api, lambda: f"/api/v1/requests/{any_request()}"),
                "request (page)": (pages, lambda: f"/requests/{any_request()}"),
            }
            result = {"requests": len(ids), "clients": args.clients}
            for name, (client, path) in scenarios.items():
                asyncio.run(load(client, path, args.clients, args.clients * 5))  # warm up
                measured = figures(asyncio.run(load(client, path, args.clients, args.calls)))
                result[name] = measured
                print(f"{name:<15} {json.dumps(measured)}")
            base = result["baseline"]["p95_ms"]
            for name in scenarios:
                result[name]["p95_vs_baseline"] = round(result[name]["p95_ms"] / base, 2)
            if args.heavy:
                alice = device_login(keycloak.issuer, "alice", settings.demo_password)
                name = "request (page), heavy outputs"
                page = scenarios["request (page)"]
                result[name] = under_heavy_outputs(
                    url, alice, args, lambda: load(pages, page[1], args.clients, args.calls)
                )
                print(f"{name:<15} {json.dumps(result[name])}")
            print(json.dumps(result))
        finally:
            portal.stop()
            keycloak.stop()
            helper.stop()
    return 0


#: An output near the size limit: about 4,000 cells (la_code × nc_year by idaci_decile) with
#: margins, of mostly small counts, whose secondary suppression takes many seconds.
HEAVY = {
    "kind": "table",
    "dataset": "pupils",
    "rows": ["la_code", "nc_year"],
    "cols": ["idaci_decile"],
    "margins": True,
}


def under_heavy_outputs(url: str, token: str, args, measure) -> dict:
    """The figures of ``measure``, run again and again while ``args.heavy`` heavy outputs are
    checked through the API (for as long as they all still compute, 60 s at most), with how
    many were still being checked when it ended and how long each took."""
    import httpx

    spans: list[tuple[float, float, int]] = []

    def check(n: int) -> None:
        began = time.perf_counter()
        answer = httpx.post(
            f"{url}/api/v1/projects/asthma-ks4/outputs",
            json={**HEAVY, "name": f"heavy {n}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=900,
        )
        spans.append((began, time.perf_counter(), answer.status_code))

    threads = [threading.Thread(target=check, args=(n,)) for n in range(args.heavy)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # all of them under way
    began = time.perf_counter()
    latencies: list[float] = []
    while len(spans) < args.heavy and time.perf_counter() - began < 60:
        latencies += asyncio.run(measure())
    ended = time.perf_counter()
    measured = figures(latencies)
    for thread in threads:
        thread.join()
    return {
        **measured,
        "heavy_outputs": args.heavy,
        "still_computing_at_the_end": sum(end > ended for _, end, _ in spans),
        "measured_s": round(ended - began, 1),
        "heavy_s": sorted(round(end - start, 1) for start, end, _ in spans),
        "heavy_status": sorted({status for _, _, status in spans}),
    }


if __name__ == "__main__":
    raise SystemExit(main())
