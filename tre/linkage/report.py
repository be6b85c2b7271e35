"""How well pupils and patients are linked: rates by subgroup and, against the truth of
synthetic data, precision and recall.

A *link* here is a hospital record (an episode, an attendance, a death) carried by the
person_key of a pupil. Without the truth, the report gives the share of pupils with at least one
linked record by sex, ethnicity and free school meals (large differences between groups hint at
linkage bias). With the truth folder written by ``tre synth``: precision (links that point to
the right pupil) and recall (records of pupils that were linked to them), overall and by the
same subgroups.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb

from tre import catalog, curated, pseudonyms
from tre.db import Database
from tre.exceptions import InvalidInput, NotFound
from tre.home import Home
from tre.keys import LINK_KEY
from tre.sql import file_list, literal

SUBGROUPS = ("sex", "ethnicity", "fsm_eligible")


@dataclasses.dataclass
class Report:
    pupils: int
    patients: int
    records: int
    records_without_nhs_number: int
    records_linked_to_pupils: int
    pupil_patient_links: dict[str, int]
    record_links: dict[str, int]
    link_rates: dict[str, dict[str, dict[str, float]]]
    truth: dict | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        share = self.records_linked_to_pupils / self.records if self.records else 0
        out = [
            f"Pupils {self.pupils:,}; patients with an NHS number {self.patients:,}; "
            f"hospital records {self.records:,} ({self.records_without_nhs_number:,} without "
            "an NHS number).",
            f"Hospital records linked to a pupil: {self.records_linked_to_pupils:,} ({share:.1%}).",
            "Pupil ↔ patient links by match level: "
            + ", ".join(f"{k} {v:,}" for k, v in self.pupil_patient_links.items()),
            "Records without an NHS number linked by level: "
            + ", ".join(f"{k} {v:,}" for k, v in self.record_links.items()),
            "Share of pupils with a linked hospital record:",
        ]
        for group, values in self.link_rates.items():
            for value, row in values.items():
                out.append(
                    f"  {group}={value:<6} {row['pupils']:>9,.0f} pupils  {row['rate']:.1%} linked"
                )
        if self.truth:
            t = self.truth
            out.append(
                f"Against the truth: precision {t['precision']:.4f}, recall {t['recall']:.4f} "
                f"({t['correct']:,} correct of {t['linked']:,} links; {t['linkable']:,} "
                "records belong to pupils)."
            )
            for group, values in t["by_subgroup"].items():
                for value, row in values.items():
                    out.append(
                        f"  {group + '=' + value:<20} precision {row['precision']:.4f}  "
                        f"recall {row['recall']:.4f}"
                    )
        return out


def _rates(con, sql: str) -> dict[str, dict[str, float]]:
    rows = con.execute(sql).fetchall()
    return {str(value): {"pupils": n, "rate": rate} for value, n, rate in rows}


def report(home: Home, db: Database, truth: Path | None = None) -> Report:
    curated.finish(db, home)
    with db.read() as session:
        versions = curated.current_versions(session)
        deliveries = curated.current_deliveries(session)
    hospital = [d for d in catalog.CUSTODIANS["nhs"].datasets if d.name in versions]
    if "pupils" not in versions or not hospital:
        raise NotFound(
            "There is nothing linked yet: ingest the DfE delivery (with its census) and the "
            "NHS delivery first."
        )
    curated.check_person_keys(home, versions.values())
    stats = max(deliveries.values(), key=lambda d: d.received_at).linkage
    con = duckdb.connect()
    con.execute(
        f"CREATE TEMP VIEW pupils AS SELECT person_key, arg_max(sex, academic_year) AS sex, "
        f"arg_max(ethnicity, academic_year) AS ethnicity, "
        f"arg_max(fsm_eligible, academic_year) AS fsm_eligible "
        f"FROM read_parquet({file_list(curated.parquet_files(home, versions['pupils']))}) "
        f"GROUP BY person_key"
    )
    con.execute(
        "CREATE TEMP VIEW records AS "
        + " UNION ALL ".join(
            f"SELECT '{d.name}' AS dataset, \"{d.record_key}\" AS record_id, person_key, "
            "person_key IN (SELECT person_key FROM pupils) AS pupil "
            f"FROM read_parquet({file_list(curated.parquet_files(home, versions[d.name]))})"
            for d in hospital
        )
    )
    link_rates = {
        group: _rates(
            con,
            f"""SELECT p.{group}, count(*),
                       avg(CASE WHEN p.person_key IN (SELECT person_key FROM records WHERE pupil)
                           THEN 1 ELSE 0 END)
                FROM pupils p GROUP BY ALL ORDER BY 1""",
        )
        for group in SUBGROUPS
    }
    result = Report(
        pupils=stats["pupils"],
        patients=stats["patients"],
        records=stats["records"],
        records_without_nhs_number=stats["records_without_nhs_number"],
        records_linked_to_pupils=stats["records_linked_to_pupils"],
        pupil_patient_links=stats["pupil_patient_links"],
        record_links=stats["record_links"],
        link_rates=link_rates,
    )
    if truth is not None:
        result.truth = _against_truth(con, home, truth)
    con.close()
    return result


def _against_truth(con, home: Home, truth: Path) -> dict:
    pupils_csv, records_csv = truth / "pupils.csv", truth / "nhs_records.csv"
    if not pupils_csv.is_file() or not records_csv.is_file():
        raise InvalidInput(
            f"{truth} is not a truth folder: it needs pupils.csv and nhs_records.csv, as "
            "`tre synth` writes them."
        )
    pseudonyms.load_key(con, home.key(LINK_KEY))
    con.execute(
        f"CREATE TEMP TABLE true_pupils AS SELECT child, "
        f"{pseudonyms.person_key_sql(chr(39) + 'upn:' + chr(39) + ' || upn')} AS person_key "
        f"FROM read_csv({literal(pupils_csv)}, types = {{'upn': 'VARCHAR'}})"
    )
    con.execute(f"""
        CREATE TEMP TABLE judged AS
        SELECT r.pupil AS linked, r.pupil AND r.person_key = t.person_key AS correct,
               t.person_key IS NOT NULL AS linkable,
               coalesce(t.person_key, CASE WHEN r.pupil THEN r.person_key END) AS subject
        FROM records r
        JOIN read_csv({literal(records_csv)}, types = {{'record_id': 'VARCHAR'}}) x
          USING (dataset, record_id)
        LEFT JOIN true_pupils t ON t.child = x.child AND x.in_npd""")
    linked, correct, linkable = con.execute(
        "SELECT count(*) FILTER (WHERE linked), count(*) FILTER (WHERE correct), "
        "count(*) FILTER (WHERE linkable) FROM judged"
    ).fetchone()
    by_subgroup = {}
    for group in SUBGROUPS:
        rows = con.execute(f"""
            SELECT p.{group}, count(*) FILTER (WHERE linked), count(*) FILTER (WHERE correct),
                   count(*) FILTER (WHERE linkable)
            FROM judged j JOIN pupils p ON p.person_key = j.subject
            GROUP BY ALL ORDER BY 1""").fetchall()
        by_subgroup[group] = {
            str(value): {
                "precision": c / lk if lk else 1.0,
                "recall": c / la if la else 1.0,
                "links": lk,
            }
            for value, lk, c, la in rows
        }
    return {
        "precision": correct / linked if linked else 1.0,
        "recall": correct / linkable if linkable else 1.0,
        "linked": linked,
        "correct": correct,
        "linkable": linkable,
        "by_subgroup": by_subgroup,
    }
