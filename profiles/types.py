"""Shared, dependency-free contract types: canonical fields, identifier kinds and reason codes."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd


class IdentifierKind(StrEnum):
    """Kinds of identifier that are pseudonymised and may link records of one person."""

    EMAIL = "email"
    PHONE = "phone"
    CUSTOMER_ID = "customer_id"


class SourceKind(StrEnum):
    """What a source holds; later stages pick their inputs by kind."""

    CONTACTS = "contacts"
    ORDERS = "orders"
    NEWSLETTER = "newsletter"
    PREFERENCES = "preferences"
    CONSENTS = "consents"


TEXT_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)
"""Dtype of every text column the stages write: pandas' default `str` (Arrow, missing = NaN)."""


class CanonicalField(StrEnum):
    """Fields a source column can be mapped to in `enrich.yaml`."""

    # identifiers: validated, normalised, pseudonymised; the raw value never leaves the stage
    EMAIL = "email"
    PHONE = "phone"
    CUSTOMER_ID = "customer_id"
    # personal data that is not a join key: dropped by the identifier stage
    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    # attributes: passed through to later stages as text
    COUNTRY = "country"
    BIRTH_YEAR = "birth_year"
    CREATED_AT = "created_at"
    ORDER_ID = "order_id"
    ORDERED_AT = "ordered_at"
    AMOUNT = "amount"
    CURRENCY = "currency"
    CATEGORY = "category"
    QUANTITY = "quantity"
    SIGNED_UP_AT = "signed_up_at"
    TOPIC = "topic"
    INTERESTED = "interested"
    PURPOSE = "purpose"
    CONSENT_STATUS = "consent_status"
    RECORDED_AT = "recorded_at"
    CONSENT_SOURCE = "consent_source"
    NOTICE_VERSION = "notice_version"
    TCF_STRING = "tcf_string"
    """An IAB TCF v2.2 TC string recorded with a consent."""


IDENTIFIER_FIELDS: tuple[CanonicalField, ...] = (
    CanonicalField.EMAIL,
    CanonicalField.PHONE,
    CanonicalField.CUSTOMER_ID,
)
"""Canonical fields that carry a linkable identifier, in the order they are checked."""

NAME_FIELDS: tuple[CanonicalField, ...] = (CanonicalField.FIRST_NAME, CanonicalField.LAST_NAME)
"""Personal fields that never leave the identifier stage."""

ATTRIBUTE_FIELDS: tuple[CanonicalField, ...] = tuple(
    f for f in CanonicalField if f not in IDENTIFIER_FIELDS and f not in NAME_FIELDS
)
"""Fields passed through the identifier stage unchanged (country is also normalised)."""


class ReasonCode(StrEnum):
    """Why a field was rejected or a row quarantined. Rejections are data, never exceptions."""

    EMAIL_SYNTAX = "EMAIL_SYNTAX"
    EMAIL_MIXED_SCRIPT = "EMAIL_MIXED_SCRIPT"
    """A valid address whose local part or a domain label mixes scripts (`ann@example.com` with
    a Cyrillic a, U+0430) or holds compatibility characters (a mathematical bold or fullwidth
    letter, which NFKC folds to a plain one): a homoglyph made to pass for another address,
    or a garbled one, never a mailbox of its own. Keyed as an identifier it would be a
    distinct person who looks like the real one to every reviewer, so it is rejected like a
    syntax error (the row still links through its other identifiers). Unicode TS #39's
    mixed-script test, as browsers apply it to IDN labels; a wholly Cyrillic, Greek or CJK
    address is valid."""
    EMAIL_PLACEHOLDER = "EMAIL_PLACEHOLDER"
    EMAIL_UNDELIVERABLE = "EMAIL_UNDELIVERABLE"
    PHONE_INVALID = "PHONE_INVALID"
    PHONE_PLACEHOLDER = "PHONE_PLACEHOLDER"
    PHONE_NO_REGION = "PHONE_NO_REGION"
    CUSTOMER_ID_PLACEHOLDER = "CUSTOMER_ID_PLACEHOLDER"
    COUNTRY_UNKNOWN = "COUNTRY_UNKNOWN"
    ROW_NO_IDENTIFIER = "ROW_NO_IDENTIFIER"
    ROW_UNPARSEABLE = "ROW_UNPARSEABLE"

    @property
    def is_row_level(self) -> bool:
        """True for codes that quarantine the whole row."""
        return self.name.startswith("ROW_")


class Purpose(StrEnum):
    """What personal data is processed for. Every decision is about one purpose."""

    ENRICHMENT = "enrichment"
    """Sending a person's identifiers to an external enrichment provider."""
    PROFILING = "profiling"
    """Building interest and behaviour profiles (scores, segments, personas)."""
    CRM_EXPORT = "crm_export"
    """Writing the person into the CRM import file."""
    ADS_EXPORT = "ads_export"
    """Uploading the person's hashed identifiers to an ad platform audience."""
    ANALYTICS = "analytics"
    """Aggregate reporting about customers."""


class ConsentStatus(StrEnum):
    """State of one consent record."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


class SuppressionKind(StrEnum):
    """Why a subject is on the suppression list."""

    ERASURE = "erasure"
    """Art. 17 erasure: never processed again, for any purpose."""
    OBJECTION_PROFILING = "objection_profiling"
    """Art. 21 objection to profiling."""
    OBJECTION_DIRECT_MARKETING = "objection_direct_marketing"
    """Art. 21(2) objection to direct marketing (covers profiling for it and ad audiences)."""
    OPT_OUT_SALE_SHARING = "opt_out_sale_sharing"
    """CCPA/CPRA opt-out of sale or sharing, including a Global Privacy Control signal."""


class SignalKind(StrEnum):
    """How a signal was obtained (retention may differ per kind)."""

    DECLARED = "declared"
    """The person said so (preference centre, survey)."""
    OBSERVED = "observed"
    """Seen in behaviour (orders, newsletter clicks)."""
    INFERRED = "inferred"
    """Guessed by a model or a provider."""


class TransferBasis(StrEnum):
    """Ground for sending personal data to a provider outside the allowed regions (GDPR Ch. V)."""

    ADEQUACY = "adequacy"
    """Art. 45 adequacy decision (incl. the EU-US Data Privacy Framework for certified firms)."""
    SCC = "scc"
    """Art. 46(2)(c) standard contractual clauses (for the UK: the IDTA or the UK Addendum)."""
    BCR = "bcr"
    """Art. 47 binding corporate rules."""


class IdentifierForm(StrEnum):
    """How an identifier is sent to an enrichment provider, least identifying first.

    Keyed HMAC pseudonyms mean nothing outside this system, so providers get one of these.
    Plain SHA-256 is still personal data (anyone can hash a guessed address).
    """

    EMAIL_SHA256 = "email_sha256"
    """SHA-256 hex of the normalised email (trimmed, lower-cased)."""
    PHONE_SHA256 = "phone_sha256"
    """SHA-256 hex of the E.164 phone number."""
    PHONE_E164 = "phone_e164"
    """The phone number in E.164."""
    EMAIL = "email"
    """The normalised email itself."""
