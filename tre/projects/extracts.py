"""Extracts: a project's own copy of the approved data, and its destruction at closure.

```
<home>/projects/<id>/extracts/<dataset>/...parquet   read-only, pseudo_id instead of person_key
<home>/projects/<id>/extracts/manifest.json         datasets, columns, rows, SHA-256, sources
<home>/projects/<id>/work/                          the project's working folder
```

``pseudo_id = HMAC-SHA256(K_project, person_key)`` and record ids are re-keyed the same way,
so two projects' extracts share no value that would join their rows. Extracts are written into
a temporary folder and renamed into place: they exist whole or not at all. Provisioning (the
``tre-provision`` account) writes them; the privileged helper then gives them to the project's
own OS group (``tre-p-<id>``: ``prepare_project``, ``grant_extracts``), readable by that group
only, so the project's workspaces and output worker read their own project and no other.
Closure has the helper remove the working folders and the project's accounts
(``remove_project``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from tre import catalog, curated, keys, privileged, pseudonyms, texts
from tre.db import Database
from tre.exceptions import InvalidInput, InvalidTransition, TREError
from tre.home import Home
from tre.people import Person
from tre.projects import Project, access_changed, lock, record_closed, record_provisioned
from tre.projects.lifecycle import State
from tre.projects.spec import ProjectSpec
from tre.sql import Connection, file_list, identifier, literal

MANIFEST = "manifest.json"


def folder(home: Home, project_id: str) -> Path:
    return home.projects / project_id


def os_group(project_id: str) -> str:
    """The project's OS group (it reads the extracts): :func:`tre.privileged.project_group`."""
    return privileged.project_group(project_id)


def cohort_sql(spec: ProjectSpec, sources: dict[str, str], con: Connection) -> str | None:
    """SQL selecting the person_key of every person in the cohort (None: no cohort), its
    values bound on ``con``."""
    if not spec.cohort:
        return None
    parts = []
    for clause in spec.cohort:
        dataset = catalog.dataset(clause.dataset)
        types = {c.released_name: c.released_type for c in dataset.released_columns}
        where = " AND ".join(f"({c.sql(types[c.column], con.bind)})" for c in clause.where)
        parts.append(f"SELECT person_key FROM {sources[clause.dataset]} WHERE {where or 'true'}")
    return " INTERSECT ".join(parts)


def sources_of(home: Home, db: Database, spec: ProjectSpec) -> tuple[dict[str, str], dict]:
    """``read_parquet`` expressions of the current curated version of each dataset."""
    curated.finish(db, home)
    with db.read() as session:
        versions = curated.current_versions(session)
    missing = [d for d in spec.datasets if d not in versions]
    if missing:
        raise InvalidInput(
            f"There is no curated data yet for {', '.join(missing)}: ingest the custodians' "
            "deliveries first."
        )
    curated.check_person_keys(home, (versions[d] for d in spec.datasets))
    sources = {
        d: f"read_parquet({file_list(curated.parquet_files(home, versions[d]))}, "
        "union_by_name = true)"
        for d in spec.datasets
    }
    info = {
        d: {
            "version": versions[d].id,
            "delivery": versions[d].delivery,
            "created_at": versions[d].created_at,
            "catalog_version": versions[d].catalog_version,
        }
        for d in spec.datasets
    }
    return sources, info


def _copy_to(dataset: catalog.Dataset, columns: tuple[str, ...], out: Path) -> str:
    """The target and options of the COPY writing one dataset's extract into ``out``: one
    folder per value of its partition column when the extract has it, else one file."""
    options = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"
    if dataset.partition_by and dataset.partition_by in columns:
        return (
            f"{literal(out)} ({options}, PARTITION_BY ({identifier(dataset.partition_by)}), "
            "WRITE_PARTITION_COLUMNS true)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return f"{literal(out / 'data_0.parquet')} ({options})"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build(home: Home, db: Database, project: Project, target: Path) -> dict:
    """Write the approved extracts of ``project`` into ``target``; return their manifest."""
    spec = project.approved()
    sources, source_info = sources_of(home, db, spec)
    raw = duckdb.connect()
    con = Connection(raw, reads_only=False)
    try:
        pseudonyms.load_key(raw, keys.project_key(home.keys, project.id), name="project")
        cohort = cohort_sql(spec, sources, con)
        people = cohort or " UNION ".join(f"SELECT person_key FROM {s}" for s in sources.values())
        con.execute(
            "CREATE TEMP TABLE pseudonyms AS SELECT person_key, "
            f"{pseudonyms.hmac_sql('person_key', 'project')} AS pseudo_id "
            f"FROM (SELECT DISTINCT person_key FROM ({people}))"
        )
        datasets = {}
        for name, columns in spec.datasets.items():
            dataset = catalog.dataset(name)
            select = []
            for column in columns:
                quoted = identifier(column)
                if column == dataset.record_key:  # record ids get per-project pseudonyms too
                    expr = pseudonyms.hmac_sql(f"'rec:' || c.{quoted}", "project")
                    select.append(f"{expr} AS {quoted}")
                else:
                    select.append(f"c.{quoted}")
            out = target / name
            con.execute(
                f"COPY (SELECT p.pseudo_id, {', '.join(select)} FROM {sources[name]} c "
                f"JOIN pseudonyms p USING (person_key)) TO {_copy_to(dataset, columns, out)}"
            )
            if not any(out.rglob("*.parquet")):  # an empty extract still shows its columns
                out.mkdir(parents=True, exist_ok=True)
                con.execute(
                    f"COPY (SELECT p.pseudo_id, {', '.join(select)} FROM {sources[name]} c "
                    f"JOIN pseudonyms p USING (person_key) LIMIT 0) "
                    f"TO {literal(out / 'data_0.parquet')} (FORMAT parquet)"
                )
            files = [
                {
                    "path": str(path.relative_to(target)),
                    "rows": pq.ParquetFile(path).metadata.num_rows,
                    "sha256": _sha256(path),
                }
                for path in sorted(out.rglob("*.parquet"))
            ]
            described = {c.released_name: c for c in dataset.released_columns}
            datasets[name] = {
                "title": dataset.title,
                "custodian": dataset.custodian,
                "columns": [
                    {
                        "name": c,
                        "type": described[c].released_type.value,
                        "description": described[c].description,
                    }
                    for c in columns
                ],
                "rows": sum(f["rows"] for f in files),
                "files": files,
                "source": source_info[name],
            }
    finally:
        con.close()
    return {
        "project": project.id,
        "title": project.title,
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "catalog_version": catalog.CATALOG_VERSION,
        "pseudonyms": "pseudo_id = HMAC-SHA256(K_project, person_key); K_project = "
        "HKDF-SHA256(master key, per-project salt)",
        "cohort": [c.describe() for c in spec.cohort],
        "end": spec.end.isoformat(),
        "privacy_budget": spec.privacy_budget,
        "datasets": datasets,
    }


def provision(home: Home, db: Database, project_id: str, by: Person) -> tuple[Project, bool]:
    """Build the project's extracts (once). Return the project and whether anything changed."""
    from tre import permissions
    from tre.projects import expire_due, get

    permissions.check_can_administer(by, "provision a project")
    expire_due(db)
    project = get(db, project_id)
    base = folder(home, project_id)
    target = base / "extracts"
    if project.status is State.PROVISIONED and (target / MANIFEST).is_file():
        return project, False
    if project.status is not State.APPROVED:
        raise InvalidTransition(
            f"Project {project_id} is {project.state}: only an approved project is provisioned."
        )
    keys.create_project_salt(home.keys, project_id)
    base.mkdir(mode=0o750, exist_ok=True)
    # The project's group and worker account; its folder in that group, work/ the TRE's own.
    privileged.call(home.root, "prepare_project", project=project_id)
    tmp = base / f".extracts-{os.getpid()}"
    if tmp.exists():
        _make_writable(tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(mode=0o700)
    try:
        manifest = build(home, db, project, tmp)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (tmp / MANIFEST).write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        # Read-only, and readable by the project's group only.
        privileged.call(home.root, "grant_extracts", project=project_id, folder=tmp.name)
        if target.exists():  # left by an attempt that died before recording it
            _make_writable(target)
            shutil.rmtree(target)
        with db.write() as session:
            locked = lock(session, project_id)
            tmp.rename(target)
            record_provisioned(
                session,
                locked,
                by,
                digest,
                {
                    "datasets": {d: v["rows"] for d, v in manifest["datasets"].items()},
                    "os_group": os_group(project_id) if privileged.separated(home.root) else None,
                },
                {
                    name: {"rows": d["rows"], "columns": [c["name"] for c in d["columns"]]}
                    for name, d in manifest["datasets"].items()
                },
            )
            from tre import audit
            from tre.outputs import privacy

            privacy.set_budget(
                session,
                project_id,
                locked.approved().privacy_budget,
                audit.Event(by.username, by.main_role, "privacy.budget_set", "project", project_id),
            )
            project = locked
    except BaseException:
        if tmp.exists():
            _make_writable(tmp)
            shutil.rmtree(tmp)
        raise
    access_changed(project)
    return project, True


def _make_writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink() and p.stat().st_uid == os.geteuid():
            os.chmod(p, 0o700 if p.is_dir() else 0o600)


def close(home: Home, db: Database, project_id: str, by: Person, reason: str) -> dict:
    """Delete the extracts, the working folder and the project key; certify it in the audit."""
    from tre import permissions
    from tre.projects import expire_due

    permissions.check_can_administer(by, "close a project")
    if len(reason.strip()) < 5:
        raise InvalidInput("Say why the project is closed (it goes into the deletion certificate).")
    texts.at_most(reason, "reason")
    expire_due(db)
    base = folder(home, project_id)
    with db.write() as session:
        project = lock(session, project_id)
        if project.status is State.CLOSED:
            raise InvalidTransition(f"Project {project_id} is already closed.")
        manifest_path = base / "extracts" / MANIFEST
        deleted = []
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            deleted = [
                {"path": f"extracts/{f['path']}", "sha256": f["sha256"], "rows": f["rows"]}
                for d in manifest["datasets"].values()
                for f in d["files"]
            ]
        # The key and the extracts first: then nothing can be re-identified through the TRE,
        # whatever happens next.
        key_destroyed = keys.destroy_project_key(home.keys, project_id)
        if (base / "extracts").exists():
            _make_writable(base / "extracts")
            shutil.rmtree(base / "extracts")
        # Working folders belong to the members' accounts: the helper removes them, their
        # processes and the project's accounts. If it cannot, the certificate says what was
        # left for an administrator.
        left = []
        try:
            work_files = privileged.call(home.root, "remove_project", project=project_id)["files"]
        except TREError as e:
            work_files = 0
            left.append(e.message)
        if base.exists():
            _make_writable(base)
            shutil.rmtree(base, onerror=lambda _f, path, info: left.append(f"{path}: {info[1]}"))
        certificate = {
            "reason": reason,
            "deleted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "deleted_by": by.username,
            "extract_files": deleted,
            "extracts_manifest_sha256": project.extracts_sha256,
            "work_files_deleted": work_files,
            "project_key_destroyed": key_destroyed,
            **({"working_folders_left": "; ".join(left)[:2000]} if left else {}),
        }
        record_closed(session, project, by, certificate)
    access_changed(project)
    return certificate


def _may_provision(home: Home) -> bool:
    """Whether this process holds provisioning's keys: root, the provisioning account, or a
    home without separated accounts."""
    if privileged.running_as_root() or not privileged.separated(home.root):
        return True
    from tre.privileged import accounts

    return os.geteuid() == accounts.uid(accounts.PROVISION)


#: What an administrator can do to a project, as the portal and the API offer it.
ADMINISTRATION = ("provision", "suspend", "resume", "close")


def administer(
    home: Home, db: Database, project_id: str, action: str, by: Person, reason: str = ""
) -> Project:
    """Provision, suspend, resume or close the project; return it as it is now."""
    from tre.projects import get, set_state

    if action in ("provision", "close") and not _may_provision(home):
        # The services' account asks the helper: provisioning's account alone holds the keys.
        privileged.call(
            home.root,
            "administer_project",
            action=action,
            project=project_id,
            person={
                "username": by.username,
                "roles": sorted(by.roles),
                "groups": sorted(by.groups),
                "name": by.name,
            },
            reason=reason,
            settings={k: v for k, v in os.environ.items() if k.startswith("TRE_")},
        )
        return get(db, project_id)
    if action == "provision":
        return provision(home, db, project_id, by)[0]
    if action == "close":
        close(home, db, project_id, by, reason)
        return get(db, project_id)
    if action in ("suspend", "resume"):
        return set_state(db, project_id, action, by, reason)
    raise InvalidInput(f"Unknown action {action!r}: one of {', '.join(ADMINISTRATION)}.")
