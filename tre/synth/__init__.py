"""Synthetic deliveries: one per custodian, the same invented children in both.

``generate(pupils, seed, out)`` writes, deterministically (the same arguments give the same
bytes), ``out/dfe/`` and ``out/nhs/`` (CSV files in catalog column order plus
``manifest.json``) and ``out/truth/`` (who is who, which ingest never reads). The children are
built so that analyses give meaningful answers: about 20 % eligible for free school meals,
15 % with special educational needs, attainment lower with deprivation, SEN and hospital
admissions for asthma and injuries. Hospital records carry the identifier errors real linkage
meets: typos, nicknames, transliterated spellings, swapped day and month, a postcode from
before or after a move, missing NHS numbers; and some children are twins.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from tre import catalog, custodians
from tre.catalog import codes
from tre.catalog.constraints import UPN_LETTERS
from tre.linkage import names as linkage_names
from tre.synth import names as name_lists

FIRST_ACADEMIC_YEAR, LAST_ACADEMIC_YEAR = 2016, 2021
HOSPITAL_START, HOSPITAL_END = np.datetime64("2016-04-01"), np.datetime64("2022-03-31")
BIRTH_START, BIRTH_END = np.datetime64("2002-09-01"), np.datetime64("2016-08-31")
NON_PUPIL_SHARE = 0.07  # children in the NHS data only (independent schools, home education)
TWIN_SHARE = 0.015
POSTCODE_UNITS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))
LETTERS = "abcdefghijklmnopqrstuvwxyz"

ETHNICITY_SHARES = {
    "WHIT": 0.72,
    "ASIA": 0.115,
    "BLAK": 0.055,
    "MIXD": 0.065,
    "CHIN": 0.005,
    "AOEG": 0.02,
    "UNCL": 0.02,
}

ASTHMA_CODES = (["J459", "J450", "J46X"], [0.6, 0.25, 0.15])
INJURY_CODES = (
    ["S060", "S525", "S526", "S420", "S820", "S934", "S010", "T119", "S000", "T149"],
    [0.18, 0.15, 0.1, 0.1, 0.07, 0.1, 0.1, 0.08, 0.07, 0.05],
)
OTHER_CODES = (
    ["K359", "A09X", "J189", "R10X", "J039", "G409", "E109", "J069", "N390", "R509"],
    [0.12, 0.16, 0.1, 0.16, 0.1, 0.06, 0.04, 0.1, 0.08, 0.08],
)
SECONDARY_CODES = ["R509", "E86X", "J069", "Z880", "F840", "B349"]
DEATH_CODES = (["V892", "C910", "G409", "J459", "Q249", "X599", "W740"], None)


@dataclasses.dataclass
class Summary:
    out: Path
    pupils: int
    children: int
    rows: dict[str, int]

    def lines(self) -> list[str]:
        out = [f"{self.pupils:,} pupils and {self.children:,} children in all, in {self.out}:"]
        out += [f"  {name:<11} {n:>10,} rows" for name, n in self.rows.items()]
        return out


class _People:
    """Arrays describing every synthetic child, index = child number."""

    def __init__(self, rng: np.random.Generator, pupils: int):
        n = pupils + max(1, round(pupils * NON_PUPIL_SHARE))
        self.n, self.pupils = n, pupils
        self.in_npd = np.arange(n) < pupils
        self.male = rng.random(n) < 0.512
        span = int((BIRTH_END - BIRTH_START).astype(int))
        self.dob = BIRTH_START + rng.integers(0, span + 1, n).astype("timedelta64[D]")
        groups = list(ETHNICITY_SHARES)
        self.ethnicity = rng.choice(len(groups), n, p=list(ETHNICITY_SHARES.values()))
        self.ethnicity_codes = np.array(groups, dtype=object)[self.ethnicity]
        self.decile = rng.integers(1, 11, n)
        la_codes = list(codes.LOCAL_AUTHORITIES)
        self.la = rng.integers(0, len(la_codes), n)
        self.la_codes = np.array(la_codes, dtype=object)
        self.areas = np.array([v[1] for v in codes.LOCAL_AUTHORITIES.values()], dtype=object)
        self.primary_urn = 100000 + self.la * 1000 + rng.integers(0, 40, n)
        self.secondary_urn = 100000 + self.la * 1000 + 500 + rng.integers(0, 8, n)
        self.postcode = self._postcodes(rng, self.la)
        self.moved = rng.random(n) < 0.15
        move_span = int((np.datetime64("2022-06-30") - np.datetime64("2016-01-01")).astype(int))
        self.move_date = np.datetime64("2016-01-01") + rng.integers(0, move_span, n).astype(
            "timedelta64[D]"
        )
        self.new_postcode = self._postcodes(rng, self.la)
        self._names(rng)
        self._twins(rng)
        self.fsm = rng.random(n) < 0.36 - 0.034 * (self.decile - 1)
        u = rng.random(n)
        p_ehcp = 0.025 + 0.01 * self.male + 0.01 * self.fsm
        p_support = 0.10 + 0.05 * self.fsm + 0.03 * self.male
        self.sen = np.where(u < p_ehcp, "E", np.where(u < p_ehcp + p_support, "K", "N"))
        self.asthma = rng.random(n) < 0.09 + 0.03 * (self.decile <= 3)
        self.ability = (
            rng.normal(size=n)
            - 0.35 * self.fsm
            - 0.04 * (10 - self.decile)
            - 0.55 * (self.sen == "K")
            - 1.4 * (self.sen == "E")
        )
        self.upn = self._upns()
        self.nhs_number = self._nhs_numbers()
        self.death = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")

    def _postcodes(self, rng: np.random.Generator, la: np.ndarray) -> np.ndarray:
        n = len(la)
        district = rng.integers(1, 26, n).astype(str).astype(object)
        sector = rng.integers(0, 10, n).astype(str).astype(object)
        unit = POSTCODE_UNITS[rng.integers(0, 20, n)].astype(object) + POSTCODE_UNITS[
            rng.integers(0, 20, n)
        ].astype(object)
        return self.areas[la] + district + " " + sector + unit

    def _names(self, rng: np.random.Generator) -> None:
        n = self.n
        groups = np.array(list(ETHNICITY_SHARES), dtype=object)[self.ethnicity]
        # Mixed, other and unclassified children take their names from any of three lists.
        mixed = np.isin(groups, ["MIXD", "AOEG", "UNCL"])
        groups[mixed] = rng.choice(["WHIT", "ASIA", "BLAK"], mixed.sum(), p=[0.6, 0.2, 0.2])
        self.forename = np.empty(n, dtype=object)
        self.surname = np.empty(n, dtype=object)
        for group in ("WHIT", "ASIA", "BLAK", "CHIN"):
            in_group = groups == group
            surnames = np.array(name_lists.split(name_lists.SURNAMES[group]), dtype=object)
            self.surname[in_group] = surnames[rng.integers(0, len(surnames), in_group.sum())]
            for sex, is_male in (("M", True), ("F", False)):
                chosen = in_group & (self.male == is_male)
                forenames = np.array(
                    name_lists.split(name_lists.FORENAMES[(sex, group)]), dtype=object
                )
                self.forename[chosen] = forenames[rng.integers(0, len(forenames), chosen.sum())]
        self.name_group = groups

    def _twins(self, rng: np.random.Generator) -> None:
        """Make some children the twin of the child before them: same birth, family, home."""
        second = np.flatnonzero(rng.random(self.n) < TWIN_SHARE)
        second = second[(second > 0) & (self.in_npd[second] == self.in_npd[second - 1])]
        second = second[~np.isin(second - 1, second)]  # no triplets
        first = second - 1
        for field in (
            "dob",
            "ethnicity",
            "ethnicity_codes",
            "decile",
            "la",
            "primary_urn",
            "secondary_urn",
            "postcode",
            "moved",
            "move_date",
            "new_postcode",
            "surname",
            "name_group",
        ):
            values = getattr(self, field)
            values[second] = values[first]
        same_sex = rng.random(len(second)) < 0.65
        self.male[second] = np.where(same_sex, self.male[first], ~self.male[first])
        draws = rng.integers(0, 1000, len(second))
        for i, draw in zip(second, draws, strict=True):  # a forename for their sex and family
            sex = "M" if self.male[i] else "F"
            options = [
                name
                for name in name_lists.split(name_lists.FORENAMES[(sex, self.name_group[i])])
                if name != self.forename[i - 1]  # twins never share a forename
            ]
            self.forename[i] = options[draw % len(options)]
        self.twin = np.zeros(self.n, dtype=bool)
        self.twin[second] = self.twin[first] = True

    def _upns(self) -> np.ndarray:
        # LA code, establishment and serial (7 digits, a bijection of the child number, so
        # every UPN is unique), year of entry; then the check letter.
        serial = (np.arange(self.n, dtype=np.int64) * 7_654_321 + 1_234_567) % 10_000_000
        entry = (self.dob.astype("datetime64[Y]").astype(int) + 1970 + 4) % 100
        body = np.char.add(
            np.char.add(
                self.la_codes[self.la].astype(str), np.char.zfill((serial // 1000).astype(str), 4)
            ),
            np.char.add(
                np.char.zfill(entry.astype(str), 2), np.char.zfill((serial % 1000).astype(str), 3)
            ),
        )
        digits = np.frombuffer(body.astype("S12").tobytes(), dtype=np.uint8).reshape(-1, 12) - 48
        check = (digits * np.arange(2, 14)).sum(axis=1) % 23
        letters = np.array(list(UPN_LETTERS), dtype=object)[check]
        return (letters + body.astype(object)).astype(object)

    def _nhs_numbers(self) -> np.ndarray:
        candidates = (
            400_000_000
            + (np.arange(int(self.n * 1.2) + 20, dtype=np.int64) * 48_271 + 9_999) % 500_000_000
        )
        digits = np.frombuffer(candidates.astype(str).astype("S9").tobytes(), dtype=np.uint8)
        digits = digits.reshape(-1, 9).astype(np.int64) - 48
        check = (11 - (digits * np.arange(10, 1, -1)).sum(axis=1) % 11) % 11
        valid = check != 10
        numbers = candidates[valid] * 10 + check[valid]
        return numbers[: self.n].astype(str).astype(object)

    def postcode_on(self, child: np.ndarray, when: np.ndarray) -> np.ndarray:
        after_move = self.moved[child] & (when >= self.move_date[child])
        return np.where(after_move, self.new_postcode[child], self.postcode[child])


def _age_on(dob: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Whole years from ``dob`` to ``when``."""
    by, bm, bd = _ymd(dob)
    wy, wm, wd = _ymd(when)
    return wy - by - ((wm < bm) | ((wm == bm) & (wd < bd)))


def _ymd(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    years = dates.astype("datetime64[Y]")
    months = dates.astype("datetime64[M]")
    return (
        years.astype(int) + 1970,
        (months - years).astype(int) + 1,
        (dates - months).astype(int) + 1,
    )


def _choose(rng: np.random.Generator, options: tuple[list[str], list[float] | None], n: int):
    values, weights = options
    return np.array(values, dtype=object)[rng.choice(len(values), n, p=weights)]


def _random_dates(rng, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    span = np.maximum((end - start).astype(int), 0)
    return start + (rng.random(len(start)) * (span + 1)).astype(int).astype("timedelta64[D]")


def _typo(rng: np.random.Generator, name: str) -> str:
    if len(name) < 3:
        return name
    i = int(rng.integers(1, len(name) - 1))
    kind = rng.integers(0, 3)
    if kind == 0:  # a letter replaced
        return name[:i] + LETTERS[rng.integers(0, 26)] + name[i + 1 :]
    if kind == 1:  # a letter dropped
        return name[:i] + name[i + 1 :]
    return name[: i - 1] + name[i] + name[i - 1] + name[i + 1 :]  # two letters swapped


class _Generator:
    def __init__(self, pupils: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.people = _People(self.rng, pupils)
        self.tables: dict[str, dict[str, np.ndarray]] = {}
        self.truth: dict[str, np.ndarray] = {}

    # -- hospital and deaths (first: they shape attainment) ----------------------------------

    def hospital(self) -> None:
        p, rng = self.people, self.rng
        start = np.maximum(p.dob, HOSPITAL_START)
        years = np.maximum((HOSPITAL_END - start).astype(int), 0) / 365.25
        deprived = 1 + 0.4 * (p.decile <= 3)
        boys = 1 + 0.4 * p.male
        n_asthma = rng.poisson(0.045 * p.asthma * deprived * years)
        n_injury = rng.poisson(0.012 * boys * deprived * years)
        n_other = rng.poisson(0.028 * years)
        p.ability -= 0.12 * np.minimum(n_asthma, 5) + 0.1 * np.minimum(n_injury, 5)
        dies = rng.random(p.n) < 0.0002
        death_start = np.maximum(p.dob + np.timedelta64(30, "D"), HOSPITAL_START)
        p.death[dies] = _random_dates(rng, death_start[dies], np.full(dies.sum(), HOSPITAL_END))

        kinds = np.concatenate(
            [np.full(n_asthma.sum(), 0), np.full(n_injury.sum(), 1), np.full(n_other.sum(), 2)]
        )
        child = np.concatenate(
            [np.repeat(np.arange(p.n), k) for k in (n_asthma, n_injury, n_other)]
        )
        admitted = _random_dates(rng, start[child], np.full(len(child), HOSPITAL_END))
        keep = np.isnat(p.death[child]) | (admitted <= p.death[child])
        kinds, child, admitted = kinds[keep], child[keep], admitted[keep]
        order = np.lexsort((child, admitted))
        kinds, child, admitted = kinds[order], child[order], admitted[order]
        n = len(child)
        diagnosis = np.where(
            kinds == 0,
            _choose(rng, ASTHMA_CODES, n),
            np.where(kinds == 1, _choose(rng, INJURY_CODES, n), _choose(rng, OTHER_CODES, n)),
        )
        stay = np.where(kinds == 2, rng.integers(0, 8, n), rng.integers(0, 3, n))
        discharged = np.minimum(
            admitted + stay.astype("timedelta64[D]"), np.datetime64("2022-06-30")
        )
        emergency = (kinds < 2) | (rng.random(n) < 0.6)
        method = np.where(
            emergency,
            _choose(rng, (["21", "22", "28", "2A"], [0.75, 0.15, 0.05, 0.05]), n),
            _choose(rng, (["11", "12", "13", "81"], [0.5, 0.3, 0.15, 0.05]), n),
        )
        secondary = np.where(rng.random(n) < 0.25, _choose(rng, (SECONDARY_CODES, None), n), None)
        record = _record_ids("EP", n, 9)
        self._nhs_table(
            "hes_apc",
            child,
            admitted,
            record,
            admission_date=admitted,
            discharge_date=discharged,
            length_of_stay=(discharged - admitted).astype(int),
            age_at_admission=_age_on(p.dob[child], admitted),
            admission_method=method,
            primary_diagnosis=diagnosis,
            secondary_diagnosis=secondary,
            financial_year=_financial_year(admitted),
        )

        n_ae = rng.poisson((0.22 + 0.05 * p.asthma) * boys * deprived * years)
        child = np.repeat(np.arange(p.n), n_ae)
        arrived = _random_dates(rng, start[child], np.full(len(child), HOSPITAL_END))
        keep = np.isnat(p.death[child]) | (arrived <= p.death[child])
        child, arrived = child[keep], arrived[keep]
        order = np.lexsort((child, arrived))
        child, arrived = child[order], arrived[order]
        n = len(child)
        u = rng.random(n)
        diagnosis = np.where(
            u < 0.55,
            _choose(rng, INJURY_CODES, n),
            np.where(
                (u < 0.65) & p.asthma[child],
                _choose(rng, ASTHMA_CODES, n),
                _choose(rng, OTHER_CODES, n),
            ),
        )
        record = _record_ids("AE", n, 9)
        self._nhs_table(
            "hes_ae",
            child,
            arrived,
            record,
            arrival_date=arrived,
            arrival_mode=np.where(rng.random(n) < 0.18, "1", "2").astype(object),
            diagnosis=diagnosis,
            disposal=_choose(
                rng, (list(codes.AE_DISPOSAL), [0.08, 0.3, 0.45, 0.07, 0.05, 0.0, 0.05]), n
            ),
            financial_year=_financial_year(arrived),
        )

        child = np.flatnonzero(~np.isnat(p.death))
        died = p.death[child]
        n = len(child)
        registered = died + rng.integers(1, 12, n).astype("timedelta64[D]")
        record = _record_ids("DR", n, 8)
        self._nhs_table(
            "deaths",
            child,
            died,
            record,
            date_of_death=died,
            underlying_cause=_choose(rng, DEATH_CODES, n),
            registration_year=registered.astype("datetime64[Y]").astype(int) + 1970,
        )

    def _nhs_table(self, name, child, when, record, **columns) -> None:
        """A hospital-side table: identifiers as the hospital recorded them, with errors."""
        p, rng = self.people, self.rng
        n = len(child)
        forename = p.forename[child].copy()
        surname = p.surname[child].copy()
        for values, variant_p, nickname_p in ((forename, 0.35, 0.06), (surname, 0.2, 0.0)):
            u = rng.random(n)
            variant = np.array([linkage_names.VARIANTS.get(v) for v in values], dtype=object)
            use = (u < variant_p) & (variant != None)  # noqa: E711 - elementwise
            values[use] = variant[use]
            if nickname_p:
                nickname = np.array([linkage_names.NICKNAMES.get(v) for v in values], dtype=object)
                use = (rng.random(n) < nickname_p) & (nickname != None)  # noqa: E711
                values[use] = nickname[use]
            for i in np.flatnonzero(rng.random(n) < 0.02):
                values[i] = _typo(rng, values[i])
        dob = p.dob[child].copy()
        y, m, d = _ymd(dob)
        swap = (rng.random(n) < 0.01) & (d <= 12) & (d != m)
        dob[swap] = np.array(
            [f"{a:04d}-{b:02d}-{c:02d}" for a, b, c in zip(y[swap], d[swap], m[swap], strict=True)],
            dtype="datetime64[D]",
        )
        postcode = p.postcode_on(child, when)
        stale = rng.random(n) < 0.04
        other = np.where(
            p.moved[child],
            np.where(postcode == p.postcode[child], p.new_postcode[child], p.postcode[child]),
            self.people._postcodes(rng, p.la[child]),
        )
        postcode = np.where(stale, other, postcode)
        sex = np.where(rng.random(n) < 0.002, "9", np.where(p.male[child], "1", "2"))
        nhs = np.where(rng.random(n) < 0.03, None, p.nhs_number[child])
        dataset = catalog.dataset(name)
        values = {
            dataset.record_key: record,
            "nhs_number": nhs,
            "forename": forename,
            "surname": surname,
            "date_of_birth": dob,
            "sex": sex.astype(object),
            "postcode": postcode,
            **columns,
        }
        self.tables[name] = values
        self.truth[name] = child

    # -- education ---------------------------------------------------------------------------

    def education(self) -> None:
        p, rng = self.people, self.rng
        pupils = np.flatnonzero(p.in_npd)
        chunks: list[tuple[np.ndarray, int, np.ndarray]] = []
        for year in range(FIRST_ACADEMIC_YEAR, LAST_ACADEMIC_YEAR + 1):
            census_day = np.datetime64(f"{year + 1}-01-20")
            nc = _age_on(p.dob[pupils], np.full(len(pupils), np.datetime64(f"{year}-08-31"))) - 4
            alive = np.isnat(p.death[pupils]) | (p.death[pupils] > census_day)
            present = (nc >= 0) & (nc <= 11) & alive
            chunks.append((pupils[present], year, nc[present]))
        child = np.concatenate([c for c, _, _ in chunks])
        year = np.concatenate([np.full(len(c), y) for c, y, _ in chunks])
        nc = np.concatenate([n for _, _, n in chunks])
        census_day = np.array(
            [f"{y + 1}-01-20" for y in range(FIRST_ACADEMIC_YEAR, LAST_ACADEMIC_YEAR + 1)],
            dtype="datetime64[D]",
        )[year - FIRST_ACADEMIC_YEAR]
        urn = np.where(nc <= 6, p.primary_urn[child], p.secondary_urn[child])
        self.tables["pupils"] = {
            "upn": p.upn[child],
            "forename": p.forename[child],
            "surname": p.surname[child],
            "date_of_birth": p.dob[child],
            "sex": np.where(p.male[child], "M", "F").astype(object),
            "postcode": p.postcode_on(child, census_day),
            "ethnicity": p.ethnicity_codes[child],
            "fsm_eligible": p.fsm[child],
            "sen_provision": p.sen[child].astype(object),
            "idaci_decile": p.decile[child],
            "school_urn": urn.astype(str).astype(object),
            "la_code": p.la_codes[p.la[child]],
            "academic_year": year,
            "nc_year": nc,
        }

        n = len(child)
        compulsory = nc >= 1
        c, y, k = child[compulsory], year[compulsory], nc[compulsory]
        m = len(c)
        possible = rng.integers(300, 335, m)
        rate = np.clip(
            rng.gamma(2.0, 0.022, m)
            + 0.015 * p.fsm[c]
            + 0.02 * (p.sen[c] == "K")
            + 0.04 * (p.sen[c] == "E")
            + 0.02 * p.asthma[c]
            - 0.01 * p.ability[c],
            0,
            0.9,
        )
        missed = np.round(possible * rate).astype(int)
        unauthorised = np.round(
            missed * np.clip(0.2 + 0.15 * p.fsm[c] + 0.1 * rng.normal(size=m), 0, 1)
        ).astype(int)
        self.tables["absence"] = {
            "upn": p.upn[c],
            "academic_year": y,
            "sessions_possible": possible,
            "sessions_authorised": missed - unauthorised,
            "sessions_unauthorised": unauthorised,
        }

        factor = (1 + 0.8 * p.male[c]) * (1 + 1.0 * p.fsm[c]) * np.where(p.sen[c] == "N", 1.0, 2.2)
        suspended = rng.random(m) < np.where(k >= 7, 0.03, 0.005) * factor
        excluded = (k >= 7) & (rng.random(m) < 0.0006 * factor)
        kind = np.where(excluded, "PERM", "SUSP")
        pick = suspended | excluded
        e_child, e_year, e_kind = c[pick], y[pick], kind[pick]
        e = len(e_child)
        term_start = np.array([f"{v}-09-03" for v in e_year], dtype="datetime64[D]")
        sessions = np.where(e_kind == "SUSP", rng.integers(1, 11, e) * 0.5, np.nan)
        self.tables["exclusions"] = {
            "upn": p.upn[e_child],
            "academic_year": e_year,
            "exclusion_date": term_start + rng.integers(0, 320, e).astype("timedelta64[D]"),
            "exclusion_type": e_kind.astype(object),
            "reason": _choose(
                rng,
                (
                    list(codes.EXCLUSION_REASON),
                    [0.12, 0.08, 0.1, 0.12, 0.04, 0.05, 0.05, 0.34, 0.1],
                ),
                e,
            ),
            "sessions": sessions,
        }

        ks2 = nc == 6
        c, y = child[ks2], year[ks2]
        m = len(c)
        read = np.clip(np.round(104 + 6 * p.ability[c] + 3 * rng.normal(size=m)), 80, 120)
        maths = np.clip(np.round(104 + 6 * p.ability[c] + 3 * rng.normal(size=m)), 80, 120)
        absent = rng.random(m) < 0.03
        read = np.where(absent, np.nan, read)
        maths = np.where(absent | (rng.random(m) < 0.01), np.nan, maths)
        writing = p.ability[c] + 0.6 * rng.normal(size=m) > -0.45
        self.tables["ks2"] = {
            "upn": p.upn[c],
            "academic_year": y,
            "read_score": read,
            "maths_score": maths,
            "expected_standard": (read >= 100) & (maths >= 100) & writing,
            "school_urn": urn[ks2].astype(str).astype(object),
        }

        ks4 = nc == 11
        c, y = child[ks4], year[ks4]
        m = len(c)
        attainment = np.clip(np.round(46 + 15 * p.ability[c] + 5 * rng.normal(size=m)) / 1, 0, 90)
        attainment = np.round(attainment * 2) / 2
        self.tables["ks4"] = {
            "upn": p.upn[c],
            "academic_year": y,
            "attainment8": attainment,
            "eng_maths_grade4": p.ability[c] + 0.5 * rng.normal(size=m) > -0.35,
            "school_urn": urn[ks4].astype(str).astype(object),
        }
        self.census_rows = n

    # -- writing -----------------------------------------------------------------------------

    def write(self, out: Path, signers: Mapping[str, custodians.Signer]) -> Summary:
        from tre import deliveries

        rows: dict[str, int] = {}
        for custodian in catalog.CUSTODIANS.values():
            folder = out / custodian.id
            folder.mkdir(parents=True, exist_ok=True)
            for dataset in custodian.datasets:
                table = _arrow_table(dataset, self.tables[dataset.name])
                pacsv.write_csv(
                    table,
                    folder / dataset.file_name,
                    pacsv.WriteOptions(quoting_style="needed"),
                )
                rows[dataset.name] = table.num_rows
            deliveries.write_manifest(
                folder,
                custodian.id,
                f"{custodian.id}-synthetic-{self.people.pupils}-seed{self.seed}",
                f"Synthetic {custodian.name} delivery for {self.people.pupils:,} pupils "
                f"(seed {self.seed}), academic years {FIRST_ACADEMIC_YEAR}–"
                f"{LAST_ACADEMIC_YEAR}",
                signers.get(custodian.id),
            )
        self._write_truth(out / "truth")
        return Summary(out, self.people.pupils, self.people.n, rows)

    def _write_truth(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        p = self.people
        pupils = np.flatnonzero(p.in_npd)
        pacsv.write_csv(
            pa.table(
                {
                    "child": pupils,
                    "upn": pa.array(p.upn[pupils], pa.string()),
                    "nhs_number": pa.array(p.nhs_number[pupils], pa.string()),
                    "twin": p.twin[pupils],
                }
            ),
            folder / "pupils.csv",
        )
        records = []
        for name, child in self.truth.items():
            key = catalog.dataset(name).record_key
            records.append(
                pa.table(
                    {
                        "dataset": pa.array([name] * len(child), pa.string()),
                        "record_id": pa.array(self.tables[name][key], pa.string()),
                        "child": child,
                        "in_npd": p.in_npd[child],
                    }
                )
            )
        pacsv.write_csv(pa.concat_tables(records), folder / "nhs_records.csv")
        (folder / "README.txt").write_text(
            "The true identity of every synthetic record. Only for measuring linkage quality "
            "(tre linkage report --truth); ingest never reads this folder.\n"
        )


def _record_ids(prefix: str, n: int, width: int) -> np.ndarray:
    if n == 0:
        return np.empty(0, dtype=object)
    numbers = np.char.zfill(np.arange(1, n + 1).astype(str), width)
    return np.char.add(prefix, numbers).astype(object)


def _financial_year(dates: np.ndarray) -> np.ndarray:
    y, m, _ = _ymd(dates)
    return np.where(m >= 4, y, y - 1)


def _arrow_table(dataset: catalog.Dataset, values: Mapping[str, np.ndarray]) -> pa.Table:
    """The columns of ``dataset`` in catalog order, typed so the CSV reads as the catalog says
    (booleans as 1/0, dates as ISO 8601, missing values as empty fields)."""
    columns = {}
    for column in dataset.columns:
        data = values[column.name]
        if column.type is catalog.Type.DATE:
            array = pa.array(data, pa.date32())
        elif column.type is catalog.Type.BOOLEAN:
            array = pa.array(np.asarray(data, dtype=np.int8))
        elif column.type is catalog.Type.INTEGER and np.asarray(data).dtype.kind == "f":
            array = pa.array(data, pa.float64(), from_pandas=True).cast(pa.int64())
        elif column.type is catalog.Type.INTEGER:
            array = pa.array(np.asarray(data, dtype=np.int64))
        elif column.type is catalog.Type.DECIMAL:
            array = pa.array(np.asarray(data, dtype=np.float64), from_pandas=True)
        else:
            array = pa.array(data, pa.string())
        columns[column.name] = array
    return pa.table(columns)


def generate(
    pupils: int,
    seed: int,
    out: Path,
    signers: Mapping[str, custodians.Signer] | None = None,
) -> Summary:
    """Write synthetic deliveries for ``pupils`` pupils into ``out``; see the module doc."""
    generator = _Generator(pupils, seed)
    generator.seed = seed
    generator.hospital()
    generator.education()
    return generator.write(Path(out), signers or {})


def summarise_json(summary: Summary) -> str:
    return json.dumps(
        {"pupils": summary.pupils, "children": summary.children, "rows": summary.rows}
    )
