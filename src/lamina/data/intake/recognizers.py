"""Lamina's own Presidio recognizers, for what the predefined set lacks or does slowly.

- Phone numbers: Presidio's PhoneRecognizer runs python-phonenumbers' matcher over the
  whole text once per region, and the matcher tries dozens of sub-spans per digit run
  (1.4 ms of a 600-character record here, more than everything else together). This one
  finds phone-shaped spans with one regex and runs the same matcher, at the same leniency,
  on each span alone: the same validity test on a fraction of the text.
- Street addresses: a pattern (number, capitalised words, street type, optional city,
  state and ZIP); there is no predefined one, and NER finds places, not addresses.
- IBANs: Presidio's pattern, matched case-insensitively, runs on into a following word of
  four or more letters (`ES91...1332 thanks` became one 28-character candidate that failed
  the checksum, and the IBAN leaked). This one tries every group boundary from the longest
  and validates each with python-stdnum (country length, format and mod-97 check digits).
- US SSNs: a nine-digit run without separators is an SSN only beside the words that name
  it ("SSN", "social security"); Presidio raises that with its context enhancer, which the
  fast path does not run. Validity (area, group, serial, known fakes) from python-stdnum.
"""

from __future__ import annotations

import phonenumbers
import regex
from presidio_analyzer import LocalRecognizer, Pattern, PatternRecognizer, RecognizerResult
from stdnum import iban as stdnum_iban
from stdnum.us import ssn as stdnum_ssn

# Optional +country code, optional (area) code, then 2-4 digit groups joined by at most one
# separator; not inside a longer word or number.
PHONE_CANDIDATE = regex.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,5}(?:[\s.\-]?\d{2,5}){1,5}(?![\w])"
)

ADDRESS_REGEX = (
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}"
    r"(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Lane|Ln\.?|Drive|Dr\.?|Boulevard|Blvd\.?|Court|Ct\.?|Way|Place|Pl\.?)"
    r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)*)?(?:,?\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
)


class FastPhoneRecognizer(LocalRecognizer):
    SCORE = 0.4  # Presidio's phone score: the shape alone is weak evidence

    def __init__(self, regions: tuple[str, ...] = ("US", "GB", "DE")):
        self.regions = tuple(regions)
        super().__init__(
            supported_entities=["PHONE_NUMBER"], name="LaminaPhoneRecognizer", supported_language="en"
        )

    def load(self) -> None:
        pass

    def _valid(self, candidate: str) -> bool:
        digits = sum(c.isdigit() for c in candidate)
        if not 7 <= digits <= 15:
            return False
        # The matcher at leniency VALID (Presidio's setting) also wants a national prefix
        # where the region requires one: a bare 9-digit run is not a German number.
        for region in self.regions:
            for match in phonenumbers.PhoneNumberMatcher(
                candidate, region, leniency=phonenumbers.Leniency.VALID
            ):
                if match.end - match.start >= len(candidate) - 2:
                    return True
            if candidate.startswith("+"):
                break  # an international number reads the same from every region
        return False

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts=None, claimed: list[tuple[int, int]] = ()
    ) -> list[RecognizerResult]:
        """`claimed`: spans other recognizers found with at least this recognizer's score. A
        candidate inside one cannot win overlap resolution, so it is not worth validating."""
        out = []
        for m in PHONE_CANDIDATE.finditer(text):
            if any(s <= m.start() and m.end() <= e for s, e in claimed):
                continue
            if self._valid(m.group()):
                out.append(RecognizerResult("PHONE_NUMBER", m.start(), m.end(), self.SCORE))
        return out


def address_recognizer() -> PatternRecognizer:
    return PatternRecognizer(
        "ADDRESS",
        name="LaminaAddressRecognizer",
        patterns=[Pattern("street address", ADDRESS_REGEX, 0.6)],
        global_regex_flags=regex.M | regex.S,
    )


# A country code and check digits, then alphanumeric groups joined by at most one separator.
IBAN_CANDIDATE = regex.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,30}", regex.S)
SSN_CANDIDATE = regex.compile(r"(?<![\w-])(\d{3})([ \-.]?)(\d{2})\2(\d{4})(?![\w-])")
SSN_CONTEXT = regex.compile(r"\b(?:ssn|social[ \-]security(?:[ \-]n(?:o|umber)\.?)?|ss#)\W{0,3}(?:\w+\W{1,3}){0,3}$", regex.I)


class _Local(LocalRecognizer):
    """A recognizer that does its own work on the raw text (no NLP artifacts, no context
    enhancer: its scores are final)."""

    ENTITY = ""

    def __init__(self, name: str):
        super().__init__(supported_entities=[self.ENTITY], name=name, supported_language="en")

    def load(self) -> None:
        pass


class IbanRecognizer(_Local):
    ENTITY = "IBAN_CODE"
    SCORE = 1.0  # a passing mod-97 check on a known country's exact length is strong evidence

    def __init__(self):
        super().__init__("LaminaIbanRecognizer")

    @staticmethod
    def _ends(span: str) -> list[tuple[int, int]]:
        """(characters, alphanumerics) at every place a candidate may end: before a separator
        or at the end of the span; longest first."""
        ends, alnum = [], 0
        for i, ch in enumerate(span):
            if ch.isalnum():
                alnum += 1
                nxt = span[i + 1] if i + 1 < len(span) else " "
                if not nxt.isalnum():
                    ends.append((i + 1, alnum))
        return ends[::-1]

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        out = []
        for m in IBAN_CANDIDATE.finditer(text):
            for chars, alnum in self._ends(m.group()):
                if alnum < 15:
                    break
                compact = regex.sub(r"[ \-]", "", m.group()[:chars]).upper()
                if stdnum_iban.is_valid(compact):
                    out.append(RecognizerResult(self.ENTITY, m.start(), m.start() + chars, self.SCORE))
                    break
        return out


class SsnRecognizer(_Local):
    ENTITY = "US_SSN"
    SCORE = 0.6  # separated, valid groups: Presidio's "medium" SSN pattern scores 0.5
    BARE = 0.05  # nine digits, no context: too weak to mask on its own

    def __init__(self):
        super().__init__("LaminaSsnRecognizer")

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        out = []
        for m in SSN_CANDIDATE.finditer(text):
            digits = m.group(1) + m.group(3) + m.group(4)
            if not stdnum_ssn.is_valid(digits):
                continue
            named = SSN_CONTEXT.search(text[max(0, m.start() - 48) : m.start()]) is not None
            # Named beats the phone recognizer's 0.4 even without separators.
            score = 0.85 if named else self.SCORE if m.group(2) else self.BARE
            out.append(RecognizerResult(self.ENTITY, m.start(), m.end(), score))
        return out


# A dotted quad right after these words is a version or build number, not a host.
VERSION_CONTEXT = regex.compile(r"\b(?:version|ver|v|release|build|firmware|fw|rev|revision|update)\.?\s*[:#]?\s*$", regex.I)


def is_version_number(text: str, start: int) -> bool:
    return VERSION_CONTEXT.search(text[max(0, start - 24) : start]) is not None
