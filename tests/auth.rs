//! SigV4 authentication: header and presigned forms, payload hashing, clock skew, and the
//! promise that an unauthenticated request neither reads nor changes anything.

mod common;

use std::time::{Duration, SystemTime};

use common::*;

fn assert_error(status: u16, body: &str, want_status: Option<u16>, want_code: &str) {
    if let Some(s) = want_status {
        assert_eq!(status, s, "expected HTTP {s} {want_code}, got: {body}");
    } else {
        assert!(
            (400..500).contains(&status),
            "expected a 4xx {want_code}, got HTTP {status}: {body}"
        );
    }
    assert_eq!(
        error_code(body).as_deref(),
        Some(want_code),
        "HTTP {status}: {body}"
    );
    let root = parse_xml(body);
    assert_eq!(root.name, "Response", "error root element: {body}");
    assert!(
        root.child("RequestID").is_some(),
        "error without RequestID: {body}"
    );
}

#[test]
fn signed_request_with_right_secret_succeeds() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");

    let (status, body) = c.ec2("DescribeRegions", &[]);

    assert_eq!(status, 200, "{body}");
    assert!(
        xml_values(&body, "regionName").contains(&"us-east-1".to_string()),
        "{body}"
    );
}

#[test]
fn signed_request_with_wrong_secret_returns_signature_does_not_match() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let opts = SignOptions {
        secret: Some("not-the-secret-at-all-0000000000000000000".into()),
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeRegions", &[], &opts);

    assert_error(status, &body, Some(403), "SignatureDoesNotMatch");
}

#[test]
fn signed_request_with_unknown_key_returns_auth_failure() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let opts = SignOptions {
        access_key_id: Some("AKIAUNKNOWNKEY000000".into()),
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeRegions", &[], &opts);

    assert_error(status, &body, None, "AuthFailure");
}

#[test]
fn signed_request_ten_minutes_old_returns_request_expired() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let opts = SignOptions {
        time: SystemTime::now() - Duration::from_secs(600),
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeRegions", &[], &opts);

    assert_error(status, &body, None, "RequestExpired");
}

#[test]
fn signed_request_ten_minutes_ahead_returns_request_expired() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let opts = SignOptions {
        time: SystemTime::now() + Duration::from_secs(600),
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeRegions", &[], &opts);

    assert_error(status, &body, None, "RequestExpired");
}

#[test]
fn signed_request_with_unknown_region_returns_auth_failure() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let opts = SignOptions {
        region: Some("xx-nowhere-1".into()),
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeRegions", &[], &opts);

    assert_error(status, &body, None, "AuthFailure");
}

#[test]
fn signed_request_with_unsigned_payload_succeeds() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let opts = SignOptions {
        unsigned_payload: true,
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeRegions", &[], &opts);

    assert_eq!(status, 200, "{body}");
    assert!(
        xml_values(&body, "regionName").contains(&"us-east-1".to_string()),
        "{body}"
    );
}

#[test]
fn signed_request_with_body_hash_header_succeeds() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let body = Client::query_body("DescribeRegions", &[]);
    let headers = vec![
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
        ("x-amz-content-sha256".to_string(), sha256_hex(&body)),
    ];

    let (status, answer) = c.send_signed(
        "POST",
        "/",
        &[],
        &headers,
        body,
        "ec2",
        &SignOptions::default(),
    );

    assert_eq!(status, 200, "{answer}");
}

#[test]
fn signed_request_with_tampered_body_returns_signature_does_not_match() {
    // The signature covers the body hash: a body changed after signing must be refused.
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let signed_body = Client::query_body("DescribeImages", &p(&[("Owner.1", "self")]));
    let sent_body = Client::query_body("DescribeImages", &p(&[("Owner.1", "amazon")]));
    let headers = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded; charset=utf-8".to_string(),
    )];
    let opts = SignOptions {
        payload_hash: Some(sha256_hex(&signed_body)),
        ..Default::default()
    };

    // Sign `signed_body` but send `sent_body`.
    let (status, body) = c.send_signed("POST", "/", &[], &headers, sent_body, "ec2", &opts);

    assert_error(status, &body, Some(403), "SignatureDoesNotMatch");
}

#[test]
fn presigned_get_query_succeeds() {
    let server = KilnServer::start();
    let c = server.client("eu-west-1");
    let url = c.presign_url("DescribeRegions", &[], 300, SystemTime::now());

    let (status, body) = c.get_url(&url);

    assert_eq!(status, 200, "GET {url}: {body}");
    assert!(
        xml_values(&body, "regionName").contains(&"eu-west-1".to_string()),
        "{body}"
    );
}

#[test]
fn presigned_get_with_changed_parameter_returns_signature_does_not_match() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let url = c.presign_url(
        "DescribeRegions",
        &p(&[("RegionName.1", "us-east-1")]),
        300,
        SystemTime::now(),
    );
    let tampered = url.replace("RegionName.1=us-east-1", "RegionName.1=us-west-2");
    assert_ne!(url, tampered, "test bug: parameter not found in {url}");

    let (status, body) = c.get_url(&tampered);

    assert_error(status, &body, Some(403), "SignatureDoesNotMatch");
}

#[test]
fn presigned_get_after_expiry_is_refused() {
    // Signed 20 minutes ago, valid for 60 s: expired.
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let url = c.presign_url(
        "DescribeRegions",
        &[],
        60,
        SystemTime::now() - Duration::from_secs(1200),
    );

    let (status, body) = c.get_url(&url);

    assert!(
        (400..500).contains(&status),
        "expired presigned URL answered {status}: {body}"
    );
    let code = error_code(&body).unwrap_or_default();
    assert!(
        ["RequestExpired", "AuthFailure"].contains(&code.as_str()),
        "code {code}: {body}"
    );
}

#[test]
fn unauthenticated_requests_change_nothing() {
    // Arrange: one real image, and the keys of the account.
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let image = register_image(&c, "auth-existing", &snap, &[("keep", "yes")]);
    let wrong_secret = SignOptions {
        secret: Some("wrong-secret-wrong-secret-wrong-secret-00".into()),
        ..Default::default()
    };
    let unknown_key = SignOptions {
        access_key_id: Some("AKIAUNKNOWNKEY000000".into()),
        ..Default::default()
    };
    let expired = SignOptions {
        time: SystemTime::now() - Duration::from_secs(600),
        ..Default::default()
    };
    let writes: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "RegisterImage",
            register_params("auth-intruder", &snap, &[("evil", "1")]),
        ),
        ("CreateTags", tag_params(&image, &[("evil", "1")])),
        (
            "DeleteTags",
            p(&[("ResourceId.1", &image), ("Tag.1.Key", "keep")]),
        ),
        (
            "ModifyImageAttribute",
            p(&[("ImageId", &image), ("Description.Value", "evil")]),
        ),
        ("DeregisterImage", p(&[("ImageId", &image)])),
        ("DeleteSnapshot", p(&[("SnapshotId", &snap)])),
    ];

    // Act: every write, with a wrong secret, an unknown key, an expired time and no signature.
    for (action, params) in &writes {
        for opts in [&wrong_secret, &unknown_key, &expired] {
            let (status, body) = c.ec2_opts(action, params, opts);
            assert!(
                (400..500).contains(&status),
                "{action} with bad auth answered {status}: {body}"
            );
        }
        let (status, body) = c.post_unsigned(action, params);
        assert!(
            (400..500).contains(&status),
            "unsigned {action} answered {status}: {body}"
        );
    }

    // Assert: state is exactly as before.
    let images = c.own_images();
    assert_eq!(
        images.len(),
        1,
        "images after unauthenticated writes: {images:?}"
    );
    let img = &images[0];
    assert_eq!(img.id, image);
    assert_eq!(img.name, "auth-existing");
    assert_eq!(img.tags, vec![("keep".to_string(), "yes".to_string())]);
    assert_ne!(img.description, "evil");
    assert!(
        c.own_snapshot_ids().contains(&snap),
        "snapshot {snap} deleted by an unauthenticated call"
    );
}

#[test]
fn unauthenticated_describe_reveals_nothing() {
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let image = register_image(&c, "auth-secret-name", &snap, &[]);
    let wrong_secret = SignOptions {
        secret: Some("wrong-secret-wrong-secret-wrong-secret-00".into()),
        ..Default::default()
    };

    let (status, body) = c.ec2_opts("DescribeImages", &p(&[("Owner.1", "self")]), &wrong_secret);
    let (ustatus, ubody) = c.post_unsigned("DescribeImages", &p(&[("Owner.1", "self")]));

    assert_error(status, &body, Some(403), "SignatureDoesNotMatch");
    assert!(
        (400..500).contains(&ustatus),
        "unsigned DescribeImages answered {ustatus}: {ubody}"
    );
    for b in [&body, &ubody] {
        assert!(
            !b.contains(&image) && !b.contains("auth-secret-name"),
            "error answer leaks the image: {b}"
        );
    }
}
