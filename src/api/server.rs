//! The HTTP front door: one endpoint for EC2 Query (`/`) and the EBS direct APIs
//! (`/snapshots...`). Every request is authenticated before anything is read or changed.

use super::ebs;
use super::ec2;
use super::query::Params;
use super::sigv4::{self, SignedRequest};
use super::xml::error_document;
use crate::error::{Error, Result};
use crate::service::{ids, RequestContext, Service};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Largest request body accepted (a 512 KiB EBS block plus headroom).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The router serving every request through [`handle`].
pub fn router(service: Arc<Service>) -> Router {
    Router::new().fallback(handle).with_state(service)
}

/// Runs the background work loop: completes copies, expires stale EBS snapshots, and
/// collects unreferenced blocks (about every 5 seconds).
pub async fn run_background_work(service: Arc<Service>) {
    // Imports run on threads of their own: they are long and mostly hashing.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let collect = ticks.is_multiple_of(20);
        let svc = service.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            svc.complete_pending_work()?;
            svc.complete_volume_work()?;
            svc.watch_machines()?;
            for (instance_id, op) in svc.take_machine_ops() {
                let worker = svc.clone();
                std::thread::spawn(move || worker.run_machine_op(&instance_id, op));
            }
            svc.expire_pending_snapshots()?;
            for task_id in svc.take_queued_imports() {
                let worker = svc.clone();
                std::thread::spawn(move || worker.run_import(&task_id));
            }
            for task_id in svc.take_queued_exports() {
                let worker = svc.clone();
                std::thread::spawn(move || worker.run_export(&task_id));
            }
            if collect {
                svc.try_collect_garbage()?;
            }
            Ok::<_, Error>(())
        })
        .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("background work failed: {e}"),
            Err(e) => tracing::error!("background work panicked: {e}"),
        }
    }
}

/// Which API a request is for.
enum Api {
    Ec2,
    Ebs,
}

/// The parts of a request the blocking handler needs.
struct Incoming {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

async fn handle(State(service): State<Arc<Service>>, request: Request) -> Response {
    let request_id = ids::request_id();
    let (parts, body) = request.into_parts();
    let api = if parts.uri.path().starts_with("/snapshots") {
        Api::Ebs
    } else {
        Api::Ec2
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let e = Error::InvalidParameterValue(format!(
                "The request body is larger than {MAX_BODY_BYTES} bytes or could not be read"
            ));
            return error_response(&api, &e, &request_id);
        }
    };
    let incoming = Incoming {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let rid = request_id.clone();
    let outcome = tokio::task::spawn_blocking(move || match api {
        Api::Ec2 => (Api::Ec2, handle_ec2(&service, &incoming, &rid)),
        Api::Ebs => (Api::Ebs, handle_ebs(&service, &incoming)),
    })
    .await;
    match outcome {
        Ok((_, Ok(response))) => response,
        Ok((api, Err(e))) => {
            if e.http_status() >= 500 {
                tracing::error!(request_id, "request failed: {e}");
            }
            error_response(&api, &e, &request_id)
        }
        Err(join) => {
            tracing::error!(request_id, "handler panicked: {join}");
            error_response(
                &Api::Ec2,
                &Error::InternalError("the request handler failed".into()),
                &request_id,
            )
        }
    }
}

/// Authenticates a request for `service_name` and returns the caller and region.
fn authenticate(
    service: &Service,
    incoming: &Incoming,
    service_name: &str,
) -> Result<(crate::service::model::Account, String)> {
    let signed = SignedRequest {
        method: &incoming.method,
        path: &incoming.path,
        query: &incoming.query,
        headers: &incoming.headers,
        body: &incoming.body,
    };
    let auth = sigv4::parse_authorization(&signed)?;
    let (key, account) = service.authenticate(&auth.access_key_id)?.ok_or_else(|| {
        Error::AuthFailure("AWS was not able to validate the provided access credentials".into())
    })?;
    sigv4::verify(&signed, &auth, &key.secret_access_key, SystemTime::now())?;
    if auth.service != service_name {
        return Err(Error::AuthFailure(format!(
            "Credential should be scoped to correct service: '{service_name}', not '{}'",
            auth.service
        )));
    }
    if !service.serves_region(&auth.region) {
        return Err(Error::AuthFailure(format!(
            "Credential should be scoped to a valid region: '{}' is not served here (regions: {})",
            auth.region,
            service.config().regions.join(", ")
        )));
    }
    Ok((account, auth.region))
}

fn handle_ec2(service: &Service, incoming: &Incoming, request_id: &str) -> Result<Response> {
    let mut params = Params::from_form(incoming.query.as_bytes());
    if incoming.method == "POST" {
        params.extend_from_form(&incoming.body);
    }
    let (account, region) = authenticate(service, incoming, "ec2")?;
    let action = params.required("Action")?.to_string();
    let ctx = RequestContext {
        account,
        region,
        dry_run: params.flag("DryRun")?,
    };
    let endpoint = incoming
        .headers
        .iter()
        .find(|(n, _)| n == "host")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let xml = ec2::dispatch(service, &ctx, &action, &params, request_id, &endpoint)?;
    Ok(build(StatusCode::OK, "text/xml;charset=UTF-8", xml, None))
}

fn handle_ebs(service: &Service, incoming: &Incoming) -> Result<Response> {
    let (account, region) = authenticate(service, incoming, "ebs")?;
    let ctx = RequestContext {
        account,
        region,
        dry_run: false,
    };
    let answer = ebs::dispatch(
        service,
        &ctx,
        &ebs::EbsRequest {
            method: &incoming.method,
            path: &incoming.path,
            query: &incoming.query,
            headers: &incoming.headers,
            body: &incoming.body,
        },
    )?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = build(status, answer.content_type, answer.body, None);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

fn error_response(api: &Api, e: &Error, request_id: &str) -> Response {
    match api {
        Api::Ec2 => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            build(
                status,
                "text/xml;charset=UTF-8",
                error_document(e.code(), &e.to_string(), request_id),
                None,
            )
        }
        Api::Ebs => {
            let (status, code, _) = ebs::error_shape(e);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            build(status, "application/json", ebs::error_body(e), Some(code))
        }
    }
}

fn build(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
    error_type: Option<&str>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(code) = error_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert("x-amzn-ErrorType", code);
    }
    response
}
