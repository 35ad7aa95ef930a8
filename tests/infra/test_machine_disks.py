"""The runtime's data disk must be one its machine series can attach (infra/machine_disks.json, from Google's docs):
config refuses an incompatible pair, and the policy pack refuses one on any recorded runtime template."""

from __future__ import annotations

import json
import sys

import pytest

from tests.infra.test_program import VALID
from tests.standins.pulumi_mocks import INFRA

sys.path.insert(0, str(INFRA))
sys.path.insert(0, str(INFRA / "policy"))

import rules  # noqa: E402
from kit_infra import disks  # noqa: E402
from kit_infra.config import InfraConfigError, validate  # noqa: E402

from common import catalog  # noqa: E402

TEMPLATE = "gcp:colab/runtimeTemplate:RuntimeTemplate"


def _template(machine: str, disk: str) -> dict:
    return {"name": "llmops-dev", "machineSpec": {"machineType": machine}, "dataPersistentDiskSpec": {"diskType": disk}}


def test_the_table_names_its_source_and_the_default_fits_the_catalogs_machines():
    table = json.loads(disks.TABLE.read_text())
    assert table["source"].startswith("https://docs.cloud.google.com/compute/docs/") and "2026" in table["source"]
    default = catalog.catalog()["runtime"]["disk_type"]
    for machine in catalog.catalog()["machines"]:
        if machine != "local":
            assert disks.incompatibility(machine, default) is None, machine


@pytest.mark.parametrize("machine", ["g2-standard-24", "g2-standard-12"])
def test_config_refuses_pd_standard_on_g2(machine):
    with pytest.raises(InfraConfigError) as e:
        validate({**VALID, "runtimeMachineType": machine, "runtimeDiskType": "pd-standard"}, "dev")
    assert f"{machine} cannot use disk type 'pd-standard'" in str(e.value)
    assert "pulumi config set llmops-kit:runtimeDiskType pd-balanced" in str(e.value)


def test_config_takes_a_supported_disk_and_defaults_to_balanced():
    assert validate(VALID, "dev").runtime.disk_type == "pd-balanced"
    assert validate({**VALID, "runtimeDiskType": "pd-ssd"}, "dev").runtime.disk_type == "pd-ssd"


def test_a_series_without_a_row_is_refused_until_someone_adds_one():
    assert "not in machine_disks.json" in disks.incompatibility("a3-highgpu-8g", "pd-balanced")


def test_policy_refuses_an_incompatible_template_and_passes_a_compatible_one():
    assert any("cannot use disk type 'pd-standard'" in v for v in rules.violations(TEMPLATE, _template("g2-standard-24", "pd-standard")))
    assert not [v for v in rules.runtime_disk_fits_machine(TEMPLATE, _template("g2-standard-24", "pd-balanced"))]
