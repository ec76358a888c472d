//! The EBS direct APIs (REST-JSON, SigV4 service `ebs`) on the same endpoint as EC2.
//!
//! StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks, ListChangedBlocks
//! and GetSnapshotBlock, as the `ebs` service model defines them.

use crate::error::{Error, Result};
use crate::service::snapshot_data::{BlockListing, BlockPage, PutBlock};
use crate::service::snapshots::{StartSnapshotRequest, BLOCK_SIZE};
use crate::service::{time, RequestContext, Service};
use serde::{Deserialize, Serialize};

/// An EBS answer: status, body, content type and extra headers.
pub struct EbsResponse {
    /// HTTP status.
    pub status: u16,
    /// Body (JSON, or block bytes).
    pub body: Vec<u8>,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
}

impl EbsResponse {
    fn json(status: u16, body: String) -> EbsResponse {
        EbsResponse {
            status,
            body: body.into_bytes(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }
}

/// The parts of an EBS request the routes read.
pub struct EbsRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Raw query string.
    pub query: &'a str,
    /// Headers, lowercase names.
    pub headers: &'a [(String, String)],
    /// Body.
    pub body: &'a [u8],
}

impl EbsRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    fn query_int(&self, name: &str) -> Result<Option<i64>> {
        self.query_param(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| Error::EbsValidation {
                    reason: "INVALID_PARAMETER_VALUE",
                    message: format!("{name} must be an integer, got '{v}'"),
                })
            })
            .transpose()
    }

    fn page(&self) -> Result<BlockPage> {
        Ok(BlockPage {
            starting_index: self.query_int("startingBlockIndex")?,
            max_results: self.query_int("maxResults")?,
            page_token: self.query_param("pageToken"),
        })
    }
}

fn parse_index(text: &str) -> Result<i64> {
    text.parse::<i64>().map_err(|_| Error::EbsValidation {
        reason: "INVALID_BLOCK",
        message: format!("Block index '{text}' is not a number"),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartSnapshotBody {
    volume_size: Option<i64>,
    parent_snapshot_id: Option<String>,
    #[serde(default)]
    tags: Vec<TagJson>,
    description: Option<String>,
    client_token: Option<String>,
    #[serde(default)]
    encrypted: bool,
    kms_key_arn: Option<String>,
    timeout: Option<i64>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagJson {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StartSnapshotAnswer {
    description: String,
    snapshot_id: String,
    owner_id: String,
    status: &'static str,
    start_time: f64,
    volume_size: i64,
    block_size: u32,
    tags: Vec<TagJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_snapshot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_arn: Option<String>,
    sse_type: &'static str,
}

/// Routes one authenticated EBS request.
pub fn dispatch(
    service: &Service,
    ctx: &RequestContext,
    req: &EbsRequest<'_>,
) -> Result<EbsResponse> {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method, segments.as_slice()) {
        ("POST", ["snapshots"]) => start_snapshot(service, ctx, req.body),
        ("POST", ["snapshots", "completion", id]) => complete_snapshot(service, ctx, id, req),
        ("PUT", ["snapshots", id, "blocks", index]) => put_block(service, ctx, id, index, req),
        ("GET", ["snapshots", id, "blocks"]) => list_blocks(service, ctx, id, req),
        ("GET", ["snapshots", id, "changedblocks"]) => list_changed_blocks(service, ctx, id, req),
        ("GET", ["snapshots", id, "blocks", index]) => get_block(service, ctx, id, index, req),
        _ => Err(Error::EbsValidation {
            reason: "INVALID_PARAMETER_VALUE",
            message: format!("No EBS direct API operation at {} {}", req.method, req.path),
        }),
    }
}

fn start_snapshot(service: &Service, ctx: &RequestContext, body: &[u8]) -> Result<EbsResponse> {
    let req: StartSnapshotBody =
        serde_json::from_slice(body).map_err(|e| Error::EbsValidation {
            reason: "INVALID_PARAMETER_VALUE",
            message: format!("The request body is not a valid StartSnapshot request: {e}"),
        })?;
    let volume_size = req.volume_size.ok_or_else(|| Error::EbsValidation {
        reason: "INVALID_VOLUME_SIZE",
        message: "VolumeSize is required".into(),
    })?;
    let snapshot = service.start_snapshot(
        ctx,
        StartSnapshotRequest {
            volume_size,
            parent_snapshot_id: req.parent_snapshot_id,
            description: req.description,
            tags: req.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            client_token: req.client_token,
            encrypted: req.encrypted,
            kms_key_arn: req.kms_key_arn,
            timeout_minutes: req.timeout,
        },
    )?;
    let start_ms = time::parse_ms(&snapshot.start_time).unwrap_or(0);
    let answer = StartSnapshotAnswer {
        description: snapshot.description.clone(),
        snapshot_id: snapshot.snapshot_id.clone(),
        owner_id: snapshot.owner_id.clone(),
        status: snapshot.state.as_str(),
        start_time: start_ms as f64 / 1000.0,
        volume_size: snapshot.volume_size,
        block_size: BLOCK_SIZE,
        tags: snapshot
            .tags
            .of(ctx.account_id())
            .iter()
            .map(|(k, v)| TagJson {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        parent_snapshot_id: snapshot.parent_snapshot_id.clone(),
        kms_key_arn: snapshot.kms_key_id.clone(),
        sse_type: if snapshot.encrypted {
            "sse-ebs"
        } else {
            "none"
        },
    };
    Ok(EbsResponse::json(201, serde_json::to_string(&answer)?))
}

fn complete_snapshot(
    service: &Service,
    ctx: &RequestContext,
    snapshot_id: &str,
    req: &EbsRequest<'_>,
) -> Result<EbsResponse> {
    let count = req
        .header("x-amz-changedblockscount")
        .ok_or_else(|| Error::EbsValidation {
            reason: "INVALID_PARAMETER_VALUE",
            message: "The x-amz-ChangedBlocksCount header is required".into(),
        })?;
    let count = count
        .trim()
        .parse::<i64>()
        .map_err(|_| Error::EbsValidation {
            reason: "INVALID_PARAMETER_VALUE",
            message: format!("ChangedBlocksCount '{count}' is not a number"),
        })?;
    let state = service.complete_snapshot(
        ctx,
        snapshot_id,
        count,
        req.header("x-amz-checksum"),
        req.header("x-amz-checksum-algorithm"),
        req.header("x-amz-checksum-aggregation-method"),
    )?;
    Ok(EbsResponse::json(
        202,
        serde_json::json!({ "Status": state.as_str() }).to_string(),
    ))
}

fn put_block(
    service: &Service,
    ctx: &RequestContext,
    snapshot_id: &str,
    index: &str,
    req: &EbsRequest<'_>,
) -> Result<EbsResponse> {
    let data_length = req
        .header("x-amz-data-length")
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| Error::EbsValidation {
                reason: "INVALID_BLOCK",
                message: format!("x-amz-Data-Length '{v}' is not a number"),
            })
        })
        .transpose()?;
    let checksum = service.put_snapshot_block(
        ctx,
        PutBlock {
            snapshot_id,
            index: parse_index(index)?,
            data: req.body,
            data_length,
            checksum: req.header("x-amz-checksum"),
            algorithm: req.header("x-amz-checksum-algorithm"),
        },
    )?;
    let mut answer = EbsResponse::json(201, "{}".into());
    answer.headers.push(("x-amz-Checksum", checksum));
    answer
        .headers
        .push(("x-amz-Checksum-Algorithm", "SHA256".into()));
    Ok(answer)
}

/// The answer of a block listing: its entries under `key`, plus expiry, sizes and token.
fn listing_response<T>(
    key: &str,
    entries: Vec<serde_json::Value>,
    listing: &BlockListing<T>,
) -> EbsResponse {
    let mut body = serde_json::json!({
        "ExpiryTime": listing.expiry_ms as f64 / 1000.0,
        "VolumeSize": listing.volume_size,
        "BlockSize": BLOCK_SIZE,
    });
    body[key] = serde_json::Value::Array(entries);
    if let Some(token) = &listing.next_token {
        body["NextToken"] = serde_json::Value::String(token.clone());
    }
    EbsResponse::json(200, body.to_string())
}

fn list_blocks(
    service: &Service,
    ctx: &RequestContext,
    snapshot_id: &str,
    req: &EbsRequest<'_>,
) -> Result<EbsResponse> {
    let listing = service.list_snapshot_blocks(ctx, snapshot_id, &req.page()?)?;
    let blocks: Vec<_> = listing
        .entries
        .iter()
        .map(|b| serde_json::json!({ "BlockIndex": b.index, "BlockToken": b.token }))
        .collect();
    Ok(listing_response("Blocks", blocks, &listing))
}

fn list_changed_blocks(
    service: &Service,
    ctx: &RequestContext,
    second_id: &str,
    req: &EbsRequest<'_>,
) -> Result<EbsResponse> {
    let first = req.query_param("firstSnapshotId");
    let listing = service.list_changed_blocks(ctx, first.as_deref(), second_id, &req.page()?)?;
    let blocks: Vec<_> = listing
        .entries
        .iter()
        .map(|b| {
            let mut item = serde_json::json!({ "BlockIndex": b.index });
            if let Some(t) = &b.first_token {
                item["FirstBlockToken"] = serde_json::Value::String(t.clone());
            }
            if let Some(t) = &b.second_token {
                item["SecondBlockToken"] = serde_json::Value::String(t.clone());
            }
            item
        })
        .collect();
    Ok(listing_response("ChangedBlocks", blocks, &listing))
}

fn get_block(
    service: &Service,
    ctx: &RequestContext,
    snapshot_id: &str,
    index: &str,
    req: &EbsRequest<'_>,
) -> Result<EbsResponse> {
    let token = req
        .query_param("blockToken")
        .ok_or_else(|| Error::EbsValidation {
            reason: "INVALID_BLOCK_TOKEN",
            message: "The blockToken query parameter is required".into(),
        })?;
    let (data, checksum) =
        service.get_snapshot_block(ctx, snapshot_id, parse_index(index)?, &token)?;
    Ok(EbsResponse {
        status: 200,
        headers: vec![
            ("x-amz-Data-Length", data.len().to_string()),
            ("x-amz-Checksum", checksum),
            ("x-amz-Checksum-Algorithm", "SHA256".into()),
        ],
        body: data,
        content_type: "application/octet-stream",
    })
}

/// Maps an error to the EBS service's (status, error type, reason).
pub fn error_shape(e: &Error) -> (u16, &'static str, Option<&'static str>) {
    match e {
        Error::EbsValidation { reason, .. } => (400, "ValidationException", Some(reason)),
        Error::EbsResourceNotFound(_) => {
            (404, "ResourceNotFoundException", Some("SNAPSHOT_NOT_FOUND"))
        }
        Error::EbsConflict(_) => (409, "ConflictException", None),
        Error::AuthFailure(_) => (403, "AccessDeniedException", Some("UNAUTHORIZED_ACCOUNT")),
        Error::SignatureDoesNotMatch => (403, "InvalidSignatureException", None),
        Error::MissingAuthenticationToken | Error::IncompleteSignature(_) => {
            (403, "MissingAuthenticationTokenException", None)
        }
        Error::RequestExpired(_) => (403, "InvalidSignatureException", None),
        Error::InternalError(_) => (500, "InternalServerException", None),
        _ => (400, "ValidationException", Some("INVALID_PARAMETER_VALUE")),
    }
}

/// The JSON body of an EBS error.
pub fn error_body(e: &Error) -> String {
    let (_, code, reason) = error_shape(e);
    let mut body = serde_json::json!({ "__type": code, "Message": e.to_string() });
    if let Some(reason) = reason {
        body["Reason"] = serde_json::Value::String(reason.to_string());
    }
    body.to_string()
}
