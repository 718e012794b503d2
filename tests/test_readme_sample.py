"""The READMEs' sample report is what the kata really prints (tests/readme_sample.py)."""

import re

from lora_kata.catalog import load_catalog
from tests.readme_sample import READMES, block_in, fresh_reports


def test_the_readmes_sample_report_is_a_real_runs_output():
    reports = fresh_reports()
    for lang, readme in READMES.items():
        shown = block_in(readme)
        assert shown is not None, f"{readme.name} has no sample-report block"
        assert shown == reports[lang], (
            f"{readme.name}'s sample report differs from what the kata prints now "
            "(exercises or tests changed?): run `python -m tests.readme_sample --write`.\n"
            f"--- README ---\n{shown}\n--- the kata ---\n{reports[lang]}"
        )
    rows = re.findall(r"^ \S (\d\d)  ", reports["en"], re.M)
    assert rows == [e.id for e in load_catalog()], (
        f"the sample report should have one row per exercise of the catalogue, has {rows}"
    )
