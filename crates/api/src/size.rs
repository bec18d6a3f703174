//! Shadow-storage limits: a size, a percentage of the volume, or no limit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A shadow-storage limit, on the wire as the text an administrator writes: `"2GiB"`,
/// `"500MB"`, `"1048576"`, `"20%"` (of the volume that holds the storage) or `"UNBOUNDED"`.
/// A plain JSON number is read as bytes. Sizes take decimal and binary suffixes with binary
/// meaning (`KB` = `KiB`), as the reference tool and the configuration file do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxSize {
    Unbounded,
    Bytes(u64),
    /// 1 to 100 percent of the volume's size.
    Percent(u8),
}

/// Why a text is not a [`MaxSize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMaxSize(pub String);

impl fmt::Display for BadMaxSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max size {:?} is not a size (\"2GiB\"), a percentage of the volume (\"20%\") or \"UNBOUNDED\"",
            self.0
        )
    }
}

impl std::error::Error for BadMaxSize {}

/// Parses `"16KiB"`, `"2GiB"`, `"500MB"`, `"1048576"`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl FromStr for MaxSize {
    type Err = BadMaxSize;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let bad = || BadMaxSize(text.to_string());
        if t.eq_ignore_ascii_case("unbounded") {
            return Ok(MaxSize::Unbounded);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            return if (1..=100).contains(&p) { Ok(MaxSize::Percent(p)) } else { Err(bad()) };
        }
        parse_size(t).map(MaxSize::Bytes).ok_or_else(bad)
    }
}

impl fmt::Display for MaxSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxSize::Unbounded => f.write_str("UNBOUNDED"),
            MaxSize::Bytes(b) => write!(f, "{b}"),
            MaxSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MaxSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MaxSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Bytes(u64),
        }
        match Wire::deserialize(d)? {
            Wire::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Wire::Bytes(b) => Ok(MaxSize::Bytes(b)),
        }
    }
}

impl utoipa::PartialSchema for MaxSize {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A size (\"2GiB\", \"500MB\", \"1048576\"), a percentage of the volume that holds \
                 the storage (\"20%\"), or \"UNBOUNDED\".",
            ))
            .examples(["2GiB", "20%", "UNBOUNDED"])
            .into()
    }
}

impl utoipa::ToSchema for MaxSize {}
