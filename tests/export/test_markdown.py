"""The report card rendered (prunetune.export.markdown): the verification in words with the
criterion that applies, the figures of card.md."""

from __future__ import annotations

from dataclasses import replace

from prunetune.export.markdown import card_markdown, pct, verification_text
from tests.export.builders import card_data


def test_a_float_export_is_judged_by_a_tolerance_an_int8_one_by_top1_agreement():
    v = card_data().verification
    assert verification_text(v, int8=False).startswith(
        "float check pass: outputs equal to PyTorch's within 4.0e-03 (max |diff| 4.0e-06)"
    )
    int8 = replace(v, max_abs_diff=3.2, tolerance=None, top1_agreement=0.99)
    text = verification_text(int8, int8=True)
    assert text.startswith("int8 check pass: top-1 agreement with the float model 99.00%")
    assert "8.0% of the logits' range 40" in text
    assert verification_text(replace(v, outputs_match=False), int8=False).startswith(
        "float check FAIL"
    )


def test_card_md_shows_the_figures_of_the_card():
    text = card_markdown(card_data())
    assert "**Speedup 4.0x, file 5.0x smaller.**" in text
    assert "| test accuracy | 93.00% | 91.00% |" in text
    assert pct(None) == "-" and pct(0.5) == "50.00%"
