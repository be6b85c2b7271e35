"""The demo: the whole pipeline, non-interactively, on synthetic data.

``prepare`` plays every part in turn, in a TRE home: the custodians make their signing keys
(kept in ``<home>/demo/keys``: in real life each custodian keeps its own), an administrator
registers the public keys, the custodians deliver synthetic data, the TRE ingests it, and the
linkage report is printed against the synthetic truth. Then the example applications in
``projects/`` are submitted by their leads, approved by each custodian, and provisioned.
Each step is skipped when already done, so running it again changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from tre import audit, catalog, custodians, home, people, privileged, projects, synth
from tre.config import Settings
from tre.db import Database
from tre.home import Home
from tre.ingest import ingest
from tre.linkage import report as linkage_report
from tre.projects import extracts, spec
from tre.projects.lifecycle import State
from tre.projects.spec import ProjectSpec

DEFAULT_PUPILS = 2000
SEED = 42
EXAMPLE_PROJECTS = sorted((Path(__file__).resolve().parents[1] / "projects").glob("*.yaml"))
DEMO_CUSTODIANS = {"dfe": "dora", "nhs": "hugh"}
ADMIN = "ada"


def prepare(
    settings: Settings,
    pupils: int = DEFAULT_PUPILS,
    say: Callable[[str], None] = print,
    actor: str = "demo",
) -> None:
    """The whole demo in this process (a home without separated accounts, or the tests)."""
    prepare_data(settings, pupils, say, actor)
    prepare_projects(settings, say)


def prepare_data(
    settings: Settings,
    pupils: int = DEFAULT_PUPILS,
    say: Callable[[str], None] = print,
    actor: str = "demo",
) -> None:
    """The custodians' keys and deliveries, their ingest and the linkage report (ingest's
    part: it reads the link key)."""
    if not privileged.separated(settings.home):
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
    db = Database.of_settings(settings)
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


def prepare_projects(
    settings: Settings, say: Callable[[str], None] = print, more: Iterable[ProjectSpec] = ()
) -> None:
    """The example applications (and ``more``) submitted, approved and provisioned
    (provisioning's part: it reads the master key)."""
    db = Database.of_settings(settings)
    try:
        for application in [*(spec.load(f) for f in EXAMPLE_PROJECTS), *more]:
            _project_through_approval(Home(settings.home), db, application, say)
    finally:
        db.dispose()


def _project_through_approval(home: Home, db: Database, application, say) -> None:
    """Submit as the lead, approve as each custodian, provision as the administrator."""
    existing = {p.id: p for p in projects.listing(db)}
    if application.id not in existing:
        projects.submit(db, application, people.local_person(application.lead))
        say(f"{application.lead} submitted project {application.id}: {application.title}.")
    project = projects.get(db, application.id)
    if project.status is State.SUBMITTED:
        decided = {d.custodian for d in projects.decisions(db, application.id)}
        for custodian in application.custodians:
            if custodian in decided:
                continue
            decider = DEMO_CUSTODIANS[custodian]
            projects.decide(
                db, application.id, custodian, people.local_person(decider), approve=True
            )
            say(f"{decider} approved it for {custodian}.")
    project, changed = extracts.provision(home, db, application.id, people.local_person(ADMIN))
    if changed:
        say(f"{ADMIN} provisioned it:")
    manifest = json.loads(
        (extracts.folder(home, application.id) / "extracts" / extracts.MANIFEST).read_text()
    )
    say(
        f"Project {application.id} ({project.state}), extracts in "
        f"{extracts.folder(home, application.id) / 'extracts'}:"
    )
    for name, d in manifest["datasets"].items():
        say(f"  {name:<11} {d['rows']:>10,} rows  {', '.join(c['name'] for c in d['columns'])}")


def deliveries_folder(settings: Settings, pupils: int = DEFAULT_PUPILS) -> Path:
    return Path(settings.home) / "demo" / f"deliveries-{pupils}-seed{SEED}"
