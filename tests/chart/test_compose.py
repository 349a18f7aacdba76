"""compose.yaml, the cluster on one machine (docs/cluster.md): valid under
the Compose specification's JSON schema (check-jsonschema's vendored copy of
compose-spec.json), and consistent with the files it mounts and the images
scripts/images.sh builds. Running it needs the third-party images
(PostgreSQL, Redis, Garage, curl) from a registry, which this machine cannot
reach; what its init containers do is run against a real Garage by
tests/tests/cluster_doc.rs instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DEPLOY = REPO / "deploy" / "compose"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_under_the_compose_spec_schema():
    checker = Path(sys.executable).parent / "check-jsonschema"
    out = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_images_are_the_ones_images_sh_builds_at_this_version():
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    version = cargo["workspace"]["package"]["version"]
    images = {name: s["image"] for name, s in compose()["services"].items()}
    for service in ("gateway", "bucket-init"):
        assert images[service] == f"picsift/gateway:${{PICSIFT_VERSION:-{version}}}"
    assert images["worker"] == f"picsift/worker:${{PICSIFT_VERSION:-{version}}}"


def test_compose_services_wait_for_what_they_need():
    services = compose()["services"]
    for name in ("gateway", "worker"):
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
        assert needs["bucket-init"]["condition"] == "service_completed_successfully"
    assert (
        services["bucket-init"]["depends_on"]["garage-init"]["condition"]
        == "service_completed_successfully"
    )
    for service in services.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in services


def test_compose_settings_agree_with_the_mounted_files():
    services = compose()["services"]
    picsift = tomllib.loads((DEPLOY / "picsift.toml").read_text())
    garage = tomllib.loads((DEPLOY / "garage.toml").read_text())
    init = services["garage-init"]["environment"]
    assert init["S3_KEY_ID"] == picsift["s3"]["access_key_id"]
    assert init["S3_SECRET"] == picsift["s3"]["secret_access_key"]
    assert init["BUCKET"] == picsift["s3"]["bucket"]
    assert init["GARAGE_ADMIN_TOKEN"] == garage["admin"]["admin_token"]
    assert re.fullmatch(r"GK[0-9a-f]{24}", init["S3_KEY_ID"])
    assert re.fullmatch(r"[0-9a-f]{64}", init["S3_SECRET"])
    pg = services["postgres"]["environment"]
    assert picsift["postgres"]["url"] == (
        f"postgres://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert picsift["redis"]["url"].startswith("redis://redis:6379/")
    assert picsift["s3"]["endpoint"] == "http://garage:3900"
    key = services["gateway"]["environment"]["PICSIFT_ADMIN_KEY"]
    assert re.fullmatch(r"psk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    assert key in (REPO / "docs" / "cluster.md").read_text(), "the doc uploads with it"
    for name in ("bucket-init", "gateway", "worker"):
        env = services[name]["environment"]
        assert env["AWS_EC2_METADATA_DISABLED"] == "true"
        assert env["PICSIFT_CONFIG"] == "/etc/picsift/picsift.toml"
        assert any(v.endswith(":/etc/picsift/picsift.toml:ro") for v in services[name]["volumes"])
