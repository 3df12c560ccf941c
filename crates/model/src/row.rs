//! Column types shared by both stores' row decoding (the `sqlx` feature).

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Postgres, Sqlite, Type};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

/// A UUID column: PostgreSQL's `uuid`, or SQLite's hyphenated text (the
/// form the SQLite store writes), where sqlx itself reads UUIDs only as
/// 16-byte blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UuidColumn(pub Uuid);

impl From<UuidColumn> for Uuid {
    fn from(column: UuidColumn) -> Self {
        column.0
    }
}

impl Type<Postgres> for UuidColumn {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for UuidColumn {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <Uuid as Decode<'r, Postgres>>::decode(value).map(Self)
    }
}

impl Type<Sqlite> for UuidColumn {
    fn type_info() -> SqliteTypeInfo {
        <Hyphenated as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <Hyphenated as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for UuidColumn {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        <Hyphenated as Decode<'r, Sqlite>>::decode(value).map(|id| Self(id.into_uuid()))
    }
}
