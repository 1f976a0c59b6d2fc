"""The closed sets: every rejection reason is documented, and the README lists exactly them."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon import enums
from beacon.enums import Reason


def test_readme_lists_the_rejection_reasons_generated_from_the_enum():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert enums.markdown_reasons() in readme, "run: python -m beacon.enums README.md"


def test_every_reason_has_help():
    assert set(enums.REASON_HELP) == set(Reason)
    assert all(r.help for r in Reason)


@pytest.mark.parametrize("status", [400, 403, 405, 413, 415, 503])
def test_every_refusal_status_of_post_e_is_a_reason(status):
    assert Reason.for_status(status) == f"http_{status}"


def test_rewrite_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- reasons:begin (generated) -->\n- stale\n<!-- reasons:end -->\nafter\n")
    enums.rewrite_readme(readme)
    text = readme.read_text()
    assert "- stale" not in text
    assert text.startswith("before\n<!-- reasons:begin (generated) -->\n- `consent`:")
    assert text.endswith("<!-- reasons:end -->\nafter\n")
