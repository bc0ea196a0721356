"""Presidio masking as configured by the recipe: operators, lists, custom recognizers,
pre-filter, and measured recall/precision on the labelled synthetic set."""

from __future__ import annotations

import pytest

from lamina.data import pii_synth
from lamina.data.intake.pii import Masker
from lamina.data.intake.pii_report import evaluate, report_for
from lamina.errors import LaminaError
from lamina.recipe import CustomRecognizerSpec, PiiSpec

TEXT = "Mail jane.doe@example.com or call (415) 555-0132; card 4111 1111 1111 1111, order 48213."


@pytest.fixture(scope="module")
def placeholder():
    return Masker(PiiSpec())


def test_placeholder_replaces_each_entity_with_its_type(placeholder):
    masked, found = placeholder.mask(TEXT)
    assert masked == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>; card <CREDIT_CARD>, order 48213."
    assert [f.entity for f in found] == ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"]


def test_mask_operator_keeps_length():
    masked, _ = Masker(PiiSpec(operator="mask")).mask("write to jane.doe@example.com now")
    assert masked == "write to " + "*" * len("jane.doe@example.com") + " now"


def test_hmac_pseudonyms_are_stable_per_value_and_key():
    m = Masker(PiiSpec(operator="hmac"), b"k" * 32)
    a1, _ = m.mask("from a@example.com")
    a2, _ = m.mask("again a@example.com!")
    b, _ = m.mask("from b@example.com")
    assert a1.split()[-1] == a2.split()[-1].rstrip("!") and a1.startswith("from <EMAIL_ADDRESS_")
    assert a1 != b
    other, _ = Masker(PiiSpec(operator="hmac"), b"x" * 32).mask("from a@example.com")
    assert other != a1
    with pytest.raises(LaminaError, match="intake.pii.operator"):
        Masker(PiiSpec(operator="hmac"), b"")


def test_allow_deny_and_custom_recognizers():
    spec = PiiSpec(
        allow=["support@example.com"],
        deny={"PERSON": ["Zed Quill"]},
        custom=[CustomRecognizerSpec(entity="EMPLOYEE_ID", regex=r"\bEMP-\d{6}\b", score=0.9)],
    )
    masked, _ = Masker(spec).mask("Zed Quill (EMP-123456) wrote from support@example.com and x@example.com")
    assert masked == "<PERSON> (<EMPLOYEE_ID>) wrote from support@example.com and <EMAIL_ADDRESS>"


def test_turning_off_a_country_recognizer():
    text = "my social security number is 536-22-8726"
    assert "<US_SSN>" in Masker(PiiSpec()).mask(text)[0]
    without = Masker(PiiSpec(entities=["EMAIL_ADDRESS", "CREDIT_CARD"])).mask(text)[0]
    assert without == text


def test_unknown_entity_without_recognizer_is_refused():
    with pytest.raises(LaminaError, match="intake.pii.entities: no recognizer for entity 'PASSPORT_X'"):
        Masker(PiiSpec(entities=["PASSPORT_X"]))


def test_ner_required_but_missing_names_the_key():
    with pytest.raises(LaminaError, match="intake.pii.ner_model"):
        Masker(PiiSpec(ner="required", ner_model="no_such_spacy_model_xyz"))


def test_prefilter_finds_exactly_what_the_full_analyzer_finds():
    items = pii_synth.generate(150, seed=11)
    fast, slow = Masker(PiiSpec(prefilter=True)), Masker(PiiSpec(prefilter=False))
    assert [fast.find(i.text) for i in items] == [slow.find(i.text) for i in items]


def test_report_measures_recall_and_precision_per_entity(placeholder):
    rows = evaluate(placeholder, pii_synth.generate(400, seed=3))
    # Well-formed values are found; much of the hard quarter ("at ... dot", lower-case
    # addresses) is not. Bare nine-digit SSNs are, beside the word SSN; IBANs of twelve
    # countries, grouped or not, lower-case or followed by a word, are.
    for entity in ("EMAIL_ADDRESS", "ADDRESS"):
        assert 0.6 < rows[entity]["recall"] < 0.9, (entity, rows[entity])
    for entity in ("CREDIT_CARD", "IP_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "US_SSN"):
        assert rows[entity]["recall"] > 0.97, (entity, rows[entity])
    # Without an NER model, names are not found at all — reported, not hidden.
    assert rows["PERSON"]["recall"] == 0.0 and rows["PERSON"]["predicted"] == 0
    assert rows["ALL"]["gold"] == sum(r["gold"] for e, r in rows.items() if e != "ALL")
    assert rows["ALL"]["precision"] > 0.95


def test_report_for_names_the_analyzer_and_ner_state():
    rows, meta = report_for(PiiSpec(entities=["EMAIL_ADDRESS"]), n=60, seed=1)
    assert meta["active"] == ["EMAIL_ADDRESS"] and meta["ner"] == "none"
    assert rows["PHONE_NUMBER"]["found"] == 0 and rows["PHONE_NUMBER"]["gold"] > 0
    assert rows["EMAIL_ADDRESS"]["precision"] == 1.0


def test_ner_model_can_be_a_directory_and_is_never_downloaded(tmp_path):
    import spacy

    model_dir = tmp_path / "blank-en"
    spacy.blank("en").to_disk(model_dir)  # no NER component: finds no names, loads offline
    m = Masker(PiiSpec(ner="required", ner_model=str(model_dir)))
    assert {"PERSON", "LOCATION"} <= set(m.entities) and not m._fast
    masked, _ = m.mask("Zed Quill, zed@example.com")
    assert masked == "Zed Quill, <EMAIL_ADDRESS>"


@pytest.mark.parametrize(
    "text, value",
    [
        ("Pay to ES9121000418450200051332 thanks", "ES9121000418450200051332"),
        ("pay to es9121000418450200051332 before friday", "es9121000418450200051332"),
        ("IBAN ES91 2100 0418 4502 0005 1332 today please", "ES91 2100 0418 4502 0005 1332"),
        ("send FR1420041010050500013M02606 money", "FR1420041010050500013M02606"),
        ("IT60X0542811101000000123456 grazie", "IT60X0542811101000000123456"),
        ("to NL91ABNA0417164300 bedankt", "NL91ABNA0417164300"),
    ],
)
def test_iban_followed_by_a_word_is_masked(placeholder, text, value):
    """Presidio's case-blind IBAN pattern ran on into a following word of four or more
    letters and the checksum then failed: the IBAN leaked verbatim."""
    masked, found = placeholder.mask(text)
    assert value not in masked and [f.entity for f in found] == ["IBAN_CODE"]
    assert text[found[0].start : found[0].end] == value


def test_iban_with_a_wrong_check_digit_is_not_masked(placeholder):
    assert placeholder.mask("ref ES9221000418450200051332 thanks")[1] == []


def test_bare_ssn_is_masked_beside_its_name_and_not_alone(placeholder):
    assert placeholder.mask("My SSN is 536228190 ok")[0] == "My SSN is <US_SSN> ok"
    assert placeholder.mask("social security number: 536228190")[0] == "social security number: <US_SSN>"
    # The same digits without the word are an invoice number; never-issued areas are no SSN.
    assert placeholder.mask("Invoice 536228190 is attached")[1] == []
    assert placeholder.mask("SSN 912-34-5678 on file")[1] == []


def test_version_strings_shaped_like_addresses_are_not_ips(placeholder):
    assert placeholder.mask("Updated to version 10.0.0.1 yesterday")[1] == []
    assert placeholder.mask("firmware 192.168.1.20 fixed it")[1] == []
    assert placeholder.mask("login from 10.0.0.1 today")[0] == "login from <IP_ADDRESS> today"


def test_report_gives_confidence_intervals_that_contain_the_estimate():
    rows, meta = report_for(PiiSpec(), n=200, seed=5)
    for entity in ("IBAN_CODE", "US_SSN", "EMAIL_ADDRESS"):
        lo, hi = rows[entity]["recall_ci95"]
        assert lo <= rows[entity]["recall"] <= hi and hi - lo > 0.01
    # A perfect score on a few dozen values is not certainty: the interval says so.
    assert rows["CREDIT_CARD"]["recall_ci95"][0] < 0.97
    assert meta["uncovered"] == ["PERSON", "LOCATION"]


def test_wilson_interval_matches_hand_computed_values():
    from lamina.data.intake.pii_report import wilson

    # 8 of 10 at 95 %: centre (0.8 + 0.19208) / 1.38416, half-width 0.23736 / 1.38416 (by hand).
    assert wilson(8, 10) == [0.4902, 0.9433]
    assert wilson(0, 0) is None and wilson(0, 20)[0] == 0.0
