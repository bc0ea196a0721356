"""The data catalog: sources, dataset versions and who is in them, in SQLite (SQLAlchemy).

Lives at `<workspace>/catalog/catalog.db`. Every change happens in one transaction, so a
failure leaves the catalog as it was. Subjects are stored as keyed hashes (HMAC with the
workspace pseudonym key), never as the identifiers themselves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from lamina import workspace
from lamina.errors import LaminaError


class Base(DeclarativeBase):
    pass


class Source(Base):
    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    path: Mapped[str] = mapped_column(Text)  # where it was added from, for the record
    format: Mapped[str] = mapped_column(String)
    sha256: Mapped[str] = mapped_column(String)  # of the current raw snapshot's plaintext
    records: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    snapshot: Mapped[str] = mapped_column(Text)  # encrypted raw copy, relative to the workspace
    licence: Mapped[str] = mapped_column(String)
    origin: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    lawful_basis: Mapped[str] = mapped_column(String)
    consent_ref: Mapped[str | None] = mapped_column(String, nullable=True)
    retain_until: Mapped[str | None] = mapped_column(String, nullable=True)  # ISO date
    personal_data: Mapped[bool] = mapped_column(Boolean)
    added_at: Mapped[str] = mapped_column(String)
    added_by: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, default="active")  # active | removed
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON: how it was read when it was not native JSONL (kind, shape, columns, hub commit, file sha256)
    read_as: Mapped[str | None] = mapped_column(Text, nullable=True)

    def provenance(self) -> dict:
        keys = ("id", "name", "sha256", "revision", "records", "format", "licence", "origin", "purpose")
        keys += ("lawful_basis", "consent_ref", "retain_until", "personal_data", "added_at", "added_by")
        out = {k: getattr(self, k) for k in keys}
        if self.read_as:
            out["read_as"] = json.loads(self.read_as)
        return out


class SourceSubject(Base):
    __tablename__ = "source_subjects"
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), primary_key=True)
    subject: Mapped[str] = mapped_column(String, primary_key=True)


class Version(Base):
    __tablename__ = "versions"
    id: Mapped[str] = mapped_column(String, primary_key=True)  # sha256 of canonical records
    name: Mapped[str] = mapped_column(String, index=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the workspace
    created_at: Mapped[str] = mapped_column(String)
    created_by: Mapped[str] = mapped_column(String)
    train: Mapped[int] = mapped_column(Integer)
    eval: Mapped[int] = mapped_column(Integer)
    parent: Mapped[str | None] = mapped_column(String, nullable=True)
    status: Mapped[str] = mapped_column(String, default="current")  # current | superseded
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class VersionSource(Base):
    __tablename__ = "version_sources"
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String, default="auto")  # auto (hash split) | eval


class VersionName(Base):
    """Every name a version was taken in under: a version keeps all of them (taking the same
    records in as `support-v2` must not make `support-v1` unresolvable)."""

    __tablename__ = "version_names"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    at: Mapped[str] = mapped_column(String)
    seq: Mapped[int] = mapped_column(Integer)  # order of naming; timestamps tie within a second


class VersionSubject(Base):
    __tablename__ = "version_subjects"
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    subject: Mapped[str] = mapped_column(String, primary_key=True)


class RetrainRequired(Base):
    __tablename__ = "retrain_required"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run: Mapped[str] = mapped_column(Text)
    dataset_version: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[str] = mapped_column(String)


class Operation(Base):
    """A change made under an intent (lamina.governance.journal), committed in the same
    transaction as the change itself: the proof the next command reads after a kill."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String, primary_key=True)  # the intent's operation id
    action: Mapped[str] = mapped_column(String)
    result: Mapped[str] = mapped_column(Text)  # JSON: what the audit entry adds about the change


def stamp(s: Session, **result: object) -> None:
    """Mark the current operation as applied, inside the transaction `s` that applies it."""
    from lamina.governance import journal

    op = journal.current()
    if op is not None:
        s.merge(Operation(id=op.op_id, action=op.action, result=json.dumps(result, default=str)))


def stamped(op_id: str) -> dict | None:
    """What the operation `op_id` changed, if its transaction committed."""
    with session() as s:
        row = s.get(Operation, op_id)
        return json.loads(row.result) if row is not None else None


def db_path() -> Path:
    return workspace.subdir("catalog") / "catalog.db"


_ENGINES: dict[str, object] = {}


def _engine():
    url = f"sqlite:///{db_path()}"
    if url not in _ENGINES:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        _add_new_columns(engine)
        _ENGINES[url] = engine
    return _ENGINES[url]


def _add_new_columns(engine) -> None:
    """Catalogs made before a nullable column existed get it (create_all adds tables only)."""
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table.name})")}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type}")


@contextlib.contextmanager
def session() -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any exception."""
    from sqlalchemy.exc import DatabaseError

    try:
        with Session(_engine(), expire_on_commit=False) as s, s.begin():
            yield s
    except DatabaseError as e:  # not a database, a locked or read-only file: the environment
        raise LaminaError(f"the catalog database cannot be used: {e.orig}", str(db_path())) from None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def subject_hash(subject_id: str, key: bytes) -> str:
    return hmac.new(key, b"subject\0" + str(subject_id).encode(), hashlib.sha256).hexdigest()


def get_source(s: Session, name: str) -> Source:
    src = s.scalar(select(Source).where(Source.name == name))
    if src is None:
        raise LaminaError(f"no source named {name!r} in the catalog (see `lamina data list`)", name)
    return src


def resolve_version(s: Session, ref: str) -> Version:
    """A version by full id, unique id prefix (8+ characters), or name (its current version)."""
    # The version last taken in under that name (a version may carry several names).
    named = s.scalars(select(VersionName).where(VersionName.name == ref).order_by(VersionName.seq.desc())).first()
    if named is not None:
        return s.get(Version, named.version_id)
    # Catalogs from before names were kept apart: the current version of that name.
    order = ((Version.status == "current").desc(), Version.created_at.desc())
    by_name = s.scalars(select(Version).where(Version.name == ref).order_by(*order)).first()
    if by_name is not None:
        return by_name
    if len(ref) >= 8:
        hits = list(s.scalars(select(Version).where(Version.id.startswith(ref))))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise LaminaError(f"dataset version prefix {ref!r} is ambiguous", "data.dataset")
    raise LaminaError(f"no dataset version or name {ref!r} in the catalog", "data.dataset")


def names_of(s: Session, version_id: str) -> list[str]:
    """Every name `version_id` was taken in under, oldest first."""
    rows = s.scalars(select(VersionName).where(VersionName.version_id == version_id).order_by(VersionName.seq))
    return [r.name for r in rows]


def add_name(s: Session, version_id: str, name: str) -> None:
    if s.get(VersionName, (name, version_id)) is None:
        seq = (s.scalar(select(func.max(VersionName.seq))) or 0) + 1
        s.add(VersionName(name=name, version_id=version_id, at=now(), seq=seq))


def snapshot_table() -> dict[str, list[tuple]]:
    """Every row of every table, for tests that check a failure changed nothing."""
    with session() as s:
        out = {}
        for table in Base.metadata.sorted_tables:
            out[table.name] = sorted(tuple(r) for r in s.execute(table.select()).all())
        return out
