"""Plain helpers shared by the compat tests (no fixtures here)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
PRIMARY = "us-east-1"
SECONDARY = "us-west-2"
KILN_OWNER_ID = "100000000001"
KILN_OWNER_ALIAS = "kiln"
EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
STARTUP_TIMEOUT_S = 30.0


@dataclass
class Account:
    name: str
    account_id: str
    access_key_id: str
    secret_access_key: str


# --------------------------------------------------------------------------
# small value helpers
# --------------------------------------------------------------------------


def unique(prefix: str = "compat") -> str:
    """A name no other test uses: prefix plus 12 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def tags_of(resource: dict) -> dict:
    """Tags list of a described resource as a dict (absent list = no tags)."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def parse_time(text: str) -> dt.datetime:
    """An EC2 timestamp (2024-05-01T12:00:00.000Z) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def error_code(exc_info) -> str:
    """The AWS error code of a pytest.raises(ClientError) result."""
    return exc_info.value.response["Error"]["Code"]



# --------------------------------------------------------------------------
# raw signed HTTP (for what boto3 cannot send: unknown actions, GET, presigned,
# UNSIGNED-PAYLOAD, skewed clocks)
# --------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict
    body: str


def uri_encode(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


def sigv4_sign(
    method: str,
    host: str,
    path: str,
    query: dict,
    body: bytes,
    access_key_id: str,
    secret: str,
    region: str,
    service: str = "ec2",
    when: dt.datetime | None = None,
    unsigned_payload: bool = False,
    extra_headers: dict | None = None,
) -> dict:
    """Headers (incl. Authorization) of a SigV4-signed request. Independent of botocore."""
    when = when or dt.datetime.now(dt.timezone.utc)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    payload_hash = "UNSIGNED-PAYLOAD" if unsigned_payload else hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    for k, v in (extra_headers or {}).items():
        headers[k.lower()] = v
    signed = sorted(headers)
    canonical_query = "&".join(
        f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(query.items())
    )
    canonical_headers = "".join(f"{k}:{' '.join(str(headers[k]).split())}\n" for k in signed)
    canonical_request = "\n".join(
        [method, path, canonical_query, canonical_headers, ";".join(signed), payload_hash]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )

    def _hmac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    k = _hmac(k, "aws4_request")
    signature = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return headers


def http_send(url: str, method: str, headers: dict, body: bytes | None) -> RawResponse:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return RawResponse(resp.status, dict(resp.headers), resp.read().decode())
    except urllib.error.HTTPError as e:
        return RawResponse(e.code, dict(e.headers), e.read().decode())
