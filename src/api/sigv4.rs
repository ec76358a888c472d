//! AWS Signature Version 4 verification, for the Authorization header and presigned URLs.
//!
//! Verification is recomputation: Kiln rebuilds the canonical request from what the client
//! says it signed, derives the signing key and signature with the `aws-sigv4` crate, and
//! compares in constant time. The payload hash may be the body's SHA-256 or
//! `UNSIGNED-PAYLOAD` (the Rust SDK and presigned URLs use the latter).

use crate::error::{Error, Result};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a request's clock may be from Kiln's.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Characters SigV4 leaves unencoded: `A-Z a-z 0-9 - _ . ~`.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Headers with lowercase names, in arrival order.
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the client claims about its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key id.
    pub access_key_id: String,
    /// Scope date, `YYYYMMDD`.
    pub scope_date: String,
    /// Scope region.
    pub region: String,
    /// Scope service (`ec2`, `ebs`).
    pub service: String,
    /// Lowercase names of the signed headers.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
    /// Request time, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// Presigned URL (query-string auth).
    pub presigned: bool,
    /// Seconds a presigned URL stays valid.
    pub expires: Option<u64>,
}

/// Reads the Authorization header or the presigned query parameters.
/// `MissingAuthenticationToken` when there is neither; `IncompleteSignature` when malformed.
pub fn parse_authorization(req: &SignedRequest<'_>) -> Result<Authorization> {
    if let Some(header) = req.header("authorization") {
        return parse_header(req, header);
    }
    let query: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
        .into_owned()
        .collect();
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(algorithm) = q("X-Amz-Algorithm") else {
        return Err(Error::MissingAuthenticationToken);
    };
    if algorithm != ALGORITHM {
        return Err(Error::IncompleteSignature(format!(
            "Unsupported signing algorithm '{algorithm}'; expected {ALGORITHM}"
        )));
    }
    let missing =
        |name: &str| Error::IncompleteSignature(format!("Presigned request is missing {name}"));
    let credential = q("X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?;
    let (access_key_id, scope_date, region, service) = parse_credential(credential)?;
    let expires = q("X-Amz-Expires")
        .map(|e| {
            e.parse::<u64>()
                .map_err(|_| Error::IncompleteSignature(format!("Invalid X-Amz-Expires '{e}'")))
        })
        .transpose()?;
    Ok(Authorization {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: split_signed_headers(
            q("X-Amz-SignedHeaders").ok_or_else(|| missing("X-Amz-SignedHeaders"))?,
        ),
        signature: q("X-Amz-Signature")
            .ok_or_else(|| missing("X-Amz-Signature"))?
            .to_string(),
        amz_date: q("X-Amz-Date")
            .ok_or_else(|| missing("X-Amz-Date"))?
            .to_string(),
        presigned: true,
        expires,
    })
}

fn parse_header(req: &SignedRequest<'_>, header: &str) -> Result<Authorization> {
    let rest = header.strip_prefix(ALGORITHM).ok_or_else(|| {
        Error::IncompleteSignature(format!("Authorization header must use {ALGORITHM}"))
    })?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |name: &str| {
        Error::IncompleteSignature(format!(
            "Authorization header requires '{name}' parameter. Authorization={header}"
        ))
    };
    let (access_key_id, scope_date, region, service) =
        parse_credential(credential.ok_or_else(|| missing("Credential"))?)?;
    let amz_date = req
        .header("x-amz-date")
        .ok_or_else(|| missing("X-Amz-Date"))?
        .to_string();
    Ok(Authorization {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: split_signed_headers(
            signed_headers.ok_or_else(|| missing("SignedHeaders"))?,
        ),
        signature: signature.ok_or_else(|| missing("Signature"))?.to_string(),
        amz_date,
        presigned: false,
        expires: None,
    })
}

fn parse_credential(credential: &str) -> Result<(String, String, String, String)> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"]
            if !key.is_empty() && date.len() == 8 && !region.is_empty() && !service.is_empty() =>
        {
            Ok((key.to_string(), date.to_string(), region.to_string(), service.to_string()))
        }
        _ => Err(Error::IncompleteSignature(format!(
            "Credential must have the form KEY/YYYYMMDD/REGION/SERVICE/aws4_request, got '{credential}'"
        ))),
    }
}

fn split_signed_headers(text: &str) -> Vec<String> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(text: &str) -> Result<SystemTime> {
    let bad = || Error::IncompleteSignature(format!("Invalid X-Amz-Date '{text}'"));
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32> {
        text.get(r)
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(bad)
    };
    let month = time::Month::try_from(num(4..6)? as u8).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(num(0..4)? as i32, month, num(6..8)? as u8)
        .map_err(|_| bad())?;
    let clock = time::Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8)
        .map_err(|_| bad())?;
    let secs = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Checks the request's time against `now`, then its signature against `secret`.
pub fn verify(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
    now: SystemTime,
) -> Result<()> {
    let signed_at = parse_amz_date(&auth.amz_date)?;
    if !auth.amz_date.starts_with(&auth.scope_date) {
        return Err(Error::SignatureDoesNotMatch);
    }
    check_time(auth, signed_at, now)?;
    // Hashed only when the signature covers the body: an UNSIGNED-PAYLOAD upload of a
    // 512 KiB block is hashed once, by the block store, not twice.
    let body_hash = || hex::encode(Sha256::digest(req.body));
    let mut candidates: Vec<String> = Vec::with_capacity(2);
    match req.header("x-amz-content-sha256") {
        Some(UNSIGNED_PAYLOAD) => candidates.push(UNSIGNED_PAYLOAD.into()),
        Some(claimed) => {
            // The claimed hash is signed, but it must also be the body's.
            if !claimed.eq_ignore_ascii_case(&body_hash()) {
                return Err(Error::SignatureDoesNotMatch);
            }
            candidates.push(claimed.to_string());
        }
        None => {
            candidates.push(body_hash());
            if auth.presigned {
                candidates.push(UNSIGNED_PAYLOAD.into());
            }
        }
    }
    let key =
        aws_sigv4::sign::v4::generate_signing_key(secret, signed_at, &auth.region, &auth.service);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.scope_date, auth.region, auth.service
    );
    for payload_hash in candidates {
        let canonical = canonical_request(req, auth, &payload_hash)?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            auth.amz_date,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let expected = aws_sigv4::sign::v4::calculate_signature(&key, string_to_sign.as_bytes());
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            return Ok(());
        }
    }
    Err(Error::SignatureDoesNotMatch)
}

fn check_time(auth: &Authorization, signed_at: SystemTime, now: SystemTime) -> Result<()> {
    let skew_ok = |a: SystemTime, b: SystemTime| match a.duration_since(b) {
        Ok(d) => d <= MAX_CLOCK_SKEW,
        Err(e) => e.duration() <= MAX_CLOCK_SKEW,
    };
    if auth.presigned {
        let expires = Duration::from_secs(auth.expires.unwrap_or(900).min(7 * 24 * 3600));
        let too_early = signed_at
            .duration_since(now)
            .is_ok_and(|d| d > MAX_CLOCK_SKEW);
        if too_early || now > signed_at + expires {
            return Err(Error::RequestExpired(format!(
                "Request has expired: presigned at {} for {} seconds",
                auth.amz_date,
                expires.as_secs()
            )));
        }
        return Ok(());
    }
    if !skew_ok(signed_at, now) {
        return Err(Error::RequestExpired(format!(
            "Request timestamp {} is more than 5 minutes from the server time",
            auth.amz_date
        )));
    }
    Ok(())
}

/// The SigV4 canonical request for the headers the client says it signed.
pub fn canonical_request(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    payload_hash: &str,
) -> Result<String> {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query, auth.presigned));
    out.push('\n');
    for name in &auth.signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| normalize_header_value(v))
            .collect();
        if values.is_empty() {
            return Err(Error::SignatureDoesNotMatch);
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&auth.signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|segment| {
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            utf8_percent_encode(&decoded, SIGV4_ENCODE).to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                utf8_percent_encode(&k, SIGV4_ENCODE).to_string(),
                utf8_percent_encode(&v, SIGV4_ENCODE).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn normalize_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs a request the way clients do (the Authorization header value); used by Kiln's
/// own command-line client and tests.
pub fn sign_request(
    req: &SignedRequest<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
    signed_headers: &[&str],
) -> Result<String> {
    let auth = Authorization {
        access_key_id: access_key_id.to_string(),
        scope_date: amz_date.get(0..8).unwrap_or_default().to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed_headers.iter().map(|s| s.to_string()).collect(),
        signature: String::new(),
        amz_date: amz_date.to_string(),
        presigned: false,
        expires: None,
    };
    let payload_hash = req
        .header("x-amz-content-sha256")
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(Sha256::digest(req.body)));
    let canonical = canonical_request(req, &auth, &payload_hash)?;
    let signed_at = parse_amz_date(amz_date)?;
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, signed_at, region, service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}/{region}/{service}/aws4_request\n{}",
        auth.scope_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let signature = aws_sigv4::sign::v4::calculate_signature(&key, string_to_sign.as_bytes());
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={signature}",
        auth.scope_date,
        signed_headers.join(";")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "20261123T120000Z";

    fn headers(auth: Option<String>) -> Vec<(String, String)> {
        let mut h = vec![
            ("host".to_string(), "127.0.0.1:7780".to_string()),
            ("x-amz-date".to_string(), DATE.to_string()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
        ];
        if let Some(a) = auth {
            h.push(("authorization".to_string(), a));
        }
        h
    }

    fn signed(body: &[u8], secret: &str) -> Vec<(String, String)> {
        let unsigned = headers(None);
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &unsigned,
            body,
        };
        let auth = sign_request(
            &req,
            "AKIDEXAMPLE",
            secret,
            "us-east-1",
            "ec2",
            DATE,
            &["content-type", "host", "x-amz-date"],
        )
        .unwrap();
        headers(Some(auth))
    }

    fn at(s: &str) -> SystemTime {
        parse_amz_date(s).unwrap()
    }

    #[test]
    fn verify_correct_signature_succeeds() {
        let body = b"Action=DescribeImages&Version=2016-11-15";
        let h = signed(body, "secret");
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body,
        };
        let auth = parse_authorization(&req).unwrap();
        assert_eq!(auth.region, "us-east-1");
        verify(&req, &auth, "secret", at(DATE)).unwrap();
    }

    #[test]
    fn verify_wrong_secret_fails_with_signature_does_not_match() {
        let body = b"Action=DescribeImages";
        let h = signed(body, "secret");
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body,
        };
        let auth = parse_authorization(&req).unwrap();
        assert_eq!(
            verify(&req, &auth, "other", at(DATE)).unwrap_err(),
            Error::SignatureDoesNotMatch
        );
    }

    #[test]
    fn verify_tampered_body_fails_with_signature_does_not_match() {
        let h = signed(b"Action=DescribeImages", "secret");
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"Action=DeregisterImage",
        };
        let auth = parse_authorization(&req).unwrap();
        assert!(verify(&req, &auth, "secret", at(DATE)).is_err());
    }

    #[test]
    fn verify_clock_ten_minutes_off_fails_with_request_expired() {
        let body = b"Action=DescribeImages";
        let h = signed(body, "secret");
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body,
        };
        let auth = parse_authorization(&req).unwrap();
        let err = verify(&req, &auth, "secret", at("20261123T121000Z")).unwrap_err();
        assert_eq!(err.code(), "RequestExpired");
    }

    #[test]
    fn parse_authorization_none_fails_with_missing_authentication_token() {
        let h = headers(None);
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            parse_authorization(&req).unwrap_err(),
            Error::MissingAuthenticationToken
        );
    }

    #[test]
    fn parse_authorization_garbage_header_fails_with_incomplete_signature() {
        let h = headers(Some("AWS4-HMAC-SHA256 Credential=x".into()));
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            parse_authorization(&req).unwrap_err().code(),
            "IncompleteSignature"
        );
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("b=2&a=x y&a=1", false), "a=1&a=x%20y&b=2");
    }

    #[test]
    fn parse_amz_date_invalid_month_fails() {
        assert!(parse_amz_date("20261323T120000Z").is_err());
    }
}

#[cfg(test)]
mod property_tests {
    //! The verifier against random headers, queries and bodies: it may refuse, never panic,
    //! and never accepts a signature it did not compute.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn verify_random_authorization_never_panics_or_accepts(
            header in ".{0,200}",
            query in ".{0,200}",
            date in "[0-9TZ]{0,20}",
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let headers = vec![
                ("authorization".to_string(), format!("AWS4-HMAC-SHA256 {header}")),
                ("x-amz-date".to_string(), date),
                ("host".to_string(), "h".to_string()),
            ];
            let req = SignedRequest { method: "POST", path: "/", query: &query, headers: &headers, body: &body };
            if let Ok(auth) = parse_authorization(&req) {
                prop_assert!(verify(&req, &auth, "secret", SystemTime::now()).is_err());
            }
        }

        #[test]
        fn parse_presigned_random_query_never_panics(query in "(X-Amz-[A-Za-z]{1,12}=[A-Za-z0-9%/;_-]{0,30}&){0,8}") {
            let req = SignedRequest { method: "GET", path: "/", query: &query, headers: &[], body: b"" };
            let _ = parse_authorization(&req);
        }
    }
}
