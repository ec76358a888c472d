//! Timestamps as EC2 writes them: RFC 3339, UTC, milliseconds, `Z`.

use crate::error::{Error, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats unix milliseconds as `2026-11-23T22:01:54.000Z`.
pub fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Now, formatted.
pub fn now_string() -> String {
    format_ms(now_ms())
}

/// Parses an RFC 3339 timestamp (as clients send `DeprecateAt`) into unix milliseconds.
pub fn parse_ms(s: &str) -> Result<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| Error::InvalidParameterValue(format!("Invalid timestamp '{s}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ms_epoch_plus_one_second_has_millis() {
        assert_eq!(format_ms(1_500), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn parse_ms_round_trips_format() {
        let ms = 1_795_000_123_456;
        assert_eq!(parse_ms(&format_ms(ms)).unwrap(), ms);
    }

    #[test]
    fn parse_ms_garbage_is_invalid_parameter_value() {
        assert_eq!(
            parse_ms("tomorrow").unwrap_err().code(),
            "InvalidParameterValue"
        );
    }
}
