"""The swept GPU profiles are what a fresh derivation from the shipped sweeps writes."""

from __future__ import annotations

import pytest

from lepton.core.profiles import PROFILES_DIR, get_profile
from lepton.data import data_dir, sweeps
from lepton.data.sweeps import A40_PROFILE_PATH, render_a40_yaml

DATA_DIR = data_dir()


@pytest.mark.parametrize("model", ["V100", "P100"])
def test_v100_and_p100_curves_are_their_own_measured_sweeps_not_the_a40s(model: str) -> None:
    own, a40 = get_profile(model), get_profile("A40")
    assert own.curve != a40.curve
    assert (
        sweeps.render_swept_yaml(model) == (PROFILES_DIR / f"{model.lower()}.yaml").read_text()
    ), f"{model} drifted from its sweep: run `python -m lepton.data.sweeps derive`"


def test_checked_in_a40_profile_matches_a_fresh_derivation_from_the_shipped_sweeps() -> None:
    assert A40_PROFILE_PATH.read_text() == render_a40_yaml(DATA_DIR), (
        "gpu_profiles/a40.yaml drifted from lepton/data: run `python -m lepton.data.sweeps derive`"
    )


def test_derive_cli_check_passes_on_the_checked_in_file() -> None:
    assert sweeps.main(["derive", "--check"]) == 0
