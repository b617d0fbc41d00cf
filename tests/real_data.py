"""The real datasets for the tests that use them: the folder ``$SAOL_DATA`` names, as for the package
(default: the project's ignored ``data/``). Each such test is skipped with a reason where its data is absent."""

import pytest

from saol_core.data.common import data_root
from saol_core.study import ROOT

REAL_DATA = ROOT / data_root("folder", "$SAOL_DATA")  # an absolute $SAOL_DATA replaces ROOT


def needs(name: str):
    """Skip unless ``$SAOL_DATA/name`` (a file or folder) exists."""
    return pytest.mark.skipif(not (REAL_DATA / name).exists(),
                              reason=f"{name} not found in {REAL_DATA} (set SAOL_DATA to the folder that holds "
                                     f"it; README: where data lives)")
