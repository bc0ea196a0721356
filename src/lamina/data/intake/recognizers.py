"""Lamina's own Presidio recognizers, for what the predefined set lacks or does slowly.

- Phone numbers: Presidio's PhoneRecognizer runs python-phonenumbers' matcher over the
  whole text once per region, and the matcher tries dozens of sub-spans per digit run
  (1.4 ms of a 600-character record here, more than everything else together). This one
  finds phone-shaped spans with one regex and runs the same matcher, at the same leniency,
  on each span alone: the same validity test on a fraction of the text.
- Street addresses: a pattern (number, capitalised words, street type, optional city,
  state and ZIP); there is no predefined one, and NER finds places, not addresses.
"""

from __future__ import annotations

import phonenumbers
import regex
from presidio_analyzer import LocalRecognizer, Pattern, PatternRecognizer, RecognizerResult

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
