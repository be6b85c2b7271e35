"""The demo: the whole pipeline, non-interactively, on synthetic data.

``prepare`` plays every part in turn, in a TRE home: the custodians make their signing keys
(kept in ``<home>/demo/keys``: in real life each custodian keeps its own), an administrator
registers the public keys, the custodians deliver synthetic data, the TRE ingests it, and the
linkage report is printed against the synthetic truth. Each step is skipped when already done,
so running it again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tre import audit, catalog, custodians, home, synth
from tre.config import Settings
from tre.db import Database
from tre.home import Home
from tre.ingest import ingest
from tre.linkage import report as linkage_report

DEFAULT_PUPILS = 2000
SEED = 42


def prepare(
    settings: Settings,
    pupils: int = DEFAULT_PUPILS,
    say: Callable[[str], None] = print,
    actor: str = "demo",
) -> None:
    initialised = home.init(settings)
    if initialised.changed:
        say(f"Created the TRE home {settings.home}.")
    tre_home = Home(settings.home)
    demo = tre_home.root / "demo"
    keys = demo / "keys"
    out = demo / f"deliveries-{pupils}-seed{SEED}"

    for custodian in catalog.CUSTODIANS:
        if not (keys / f"{custodian}.key").exists():
            custodians.keygen(custodian, keys)
            say(f"Custodian {custodian} made a signing key pair.")
    db = Database(settings.metadata_url)
    try:
        with db.write() as session:
            for custodian in catalog.CUSTODIANS:
                custodians.register(
                    session,
                    custodian,
                    custodians.load_public_key(keys / f"{custodian}.pub"),
                    audit.Event(
                        actor, "tre-admin", "custodian.key_registered", "custodian", custodian
                    ),
                )
        if not (out / "truth").exists():
            signers = {c: custodians.signer(keys / f"{c}.key") for c in catalog.CUSTODIANS}
            summary = synth.generate(pupils, SEED, out, signers)
            say("Custodians delivered synthetic data (signed):")
            for line in summary.lines()[1:]:
                say(line)
        for custodian in catalog.CUSTODIANS:
            result = ingest(settings, out / custodian, actor=actor)
            for line in result.lines():
                say(line)
        say("Linkage of pupils and patients, against the synthetic truth:")
        for line in linkage_report.report(tre_home, db, out / "truth").lines():
            say("  " + line)
    finally:
        db.dispose()


def deliveries_folder(settings: Settings, pupils: int = DEFAULT_PUPILS) -> Path:
    return Path(settings.home) / "demo" / f"deliveries-{pupils}-seed{SEED}"
