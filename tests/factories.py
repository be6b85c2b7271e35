"""Factories that drive the real code to reach a state (never by writing rows directly)."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

from tre import custodians, deliveries
from tre.cli import main


@dataclasses.dataclass
class Deliveries:
    """A synthetic DfE and NHS delivery, signed, with the keys and the truth."""

    root: Path
    keys: Path

    @property
    def dfe(self) -> Path:
        return self.root / "dfe"

    @property
    def nhs(self) -> Path:
        return self.root / "nhs"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    def copy(self, target: Path) -> Deliveries:
        shutil.copytree(self.root, target)
        return Deliveries(target, self.keys)

    def resign(self, custodian: str) -> None:
        """Rewrite the manifest of a delivery after its files were edited, and sign it."""
        folder = self.root / custodian
        manifest = deliveries.read_manifest(folder)
        deliveries.write_manifest(
            folder,
            custodian,
            manifest.delivery,
            manifest.description,
            custodians.signer(self.keys / f"{custodian}.key"),
        )


def make_deliveries(target: Path, pupils: int = 300, seed: int = 7) -> Deliveries:
    keys = target / "keys"
    for custodian in ("dfe", "nhs"):
        custodians.keygen(custodian, keys)
    out = target / "deliveries"
    assert (
        main(
            [
                "synth",
                "--pupils",
                str(pupils),
                "--seed",
                str(seed),
                "--out",
                str(out),
                "--keys",
                str(keys),
            ]
        )
        == 0
    )
    return Deliveries(out, keys)


def in_workspace(home: Path, username: str, project: str, name: str, content: bytes | str) -> str:
    """Put a file in ``username``'s workspace folder of ``project`` as they would (theirs,
    0600): the account and folder are made as the workspace's first start makes them. Returns
    its path relative to that folder, as researchers name files for the airlock."""
    import os

    from tre import privileged
    from tre.privileged import accounts

    made = privileged.call(home, "prepare_workspace", username=username, project=project)
    path = Path(made["folder"]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    account = accounts.Account.named(made["account"])
    for made_path in [path, *path.relative_to(made["folder"]).parents]:
        target = Path(made["folder"]) / made_path
        os.chown(target, account.uid, account.gid)
    path.chmod(0o600)
    return name


def init_home(environ: dict[str, str], keys: Path) -> None:
    """A TRE home whose custodians' public keys are registered."""
    assert main(["init"], environ) == 0
    for custodian in ("dfe", "nhs"):
        assert (
            main(["custodian", "register", custodian, str(keys / f"{custodian}.pub")], environ) == 0
        )


def edit_csv(path: Path, row: int, column: str, value: str) -> None:
    """Set ``column`` of data row ``row`` (1 = first row after the header) to ``value``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys())
    rows[row - 1][column] = value
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
