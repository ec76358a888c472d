//! The EBS direct APIs (REST-JSON, SigV4 service `ebs`) on the same endpoint as EC2.
//!
//! StartSnapshot and CompleteSnapshot are served now (an empty snapshot, so images can be
//! registered); the block transfer actions answer with a clear error until the block store
//! exists.

use crate::error::{Error, Result};
use crate::service::snapshots::{StartSnapshotRequest, BLOCK_SIZE};
use crate::service::{time, RequestContext, Service};
use serde::{Deserialize, Serialize};

/// An EBS answer: status, JSON body.
pub struct EbsResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
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
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<EbsResponse> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["snapshots"]) => start_snapshot(service, ctx, body),
        ("POST", ["snapshots", "completion", id]) => complete_snapshot(service, ctx, id, headers),
        (_, ["snapshots", ..]) => Err(Error::EbsValidation {
            reason: "INVALID_PARAMETER_VALUE",
            message: format!(
                "{method} {path}: snapshot block transfer is not available in this Kiln version"
            ),
        }),
        _ => Err(Error::EbsValidation {
            reason: "INVALID_PARAMETER_VALUE",
            message: format!("No EBS direct API operation at {method} {path}"),
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
            .get(ctx.account_id())
            .into_iter()
            .flatten()
            .map(|(k, v)| TagJson {
                key: k.clone(),
                value: v.clone(),
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
    Ok(EbsResponse {
        status: 201,
        body: serde_json::to_string(&answer)?,
    })
}

fn complete_snapshot(
    service: &Service,
    ctx: &RequestContext,
    snapshot_id: &str,
    headers: &[(String, String)],
) -> Result<EbsResponse> {
    let count = headers
        .iter()
        .find(|(n, _)| n == "x-amz-changedblockscount")
        .map(|(_, v)| v.as_str())
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
    service.complete_snapshot(ctx, snapshot_id, count)?;
    Ok(EbsResponse {
        status: 202,
        body: r#"{"Status":"completed"}"#.into(),
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
