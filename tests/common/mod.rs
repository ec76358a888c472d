//! Shared harness for Kiln's integration tests.
//!
//! - [`KilnServer`] starts the real `kiln` binary on a free loopback port with a private data
//!   directory, can `kill -9` it and start it again on the same data directory, and kills it on
//!   drop.
//! - [`Client`] is a tiny SigV4 client: it signs EC2 Query (`POST /`, service `ec2`) and EBS
//!   direct REST-JSON (service `ebs`) requests and returns `(status, body)`.
//! - [`parse_xml`] and the `parse_*` helpers turn EC2 XML answers into small structs.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// The EC2 API version every client sends.
pub const EC2_VERSION: &str = "2016-11-15";
/// How long the server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `kiln` binary: `KILN_BIN` if set, else the one Cargo built for these tests.
pub fn kiln_bin() -> PathBuf {
    std::env::var_os("KILN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")))
}

/// An access key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Parses an AWS shared-credentials file and returns the keys of `profile`.
pub fn parse_credentials(text: &str, profile: &str) -> Option<Creds> {
    let mut in_profile = false;
    let mut id = None;
    let mut secret = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            in_profile = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(Creds {
        access_key_id: id?,
        secret_access_key: secret?,
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kiln serve` process with its own data directory.
pub struct KilnServer {
    root: tempfile::TempDir,
    data_dir: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    starts: u32,
    creds: Creds,
}

impl KilnServer {
    /// Starts a server on a fresh, empty data directory and reads the first account's keys.
    pub fn start() -> KilnServer {
        KilnServer::start_with(|_| {})
    }

    /// Like [`KilnServer::start`], after `prepare` has run on the empty data directory
    /// (for example to mount a small file system there).
    pub fn start_with(prepare: impl FnOnce(&Path)) -> KilnServer {
        let root = tempfile::Builder::new()
            .prefix("kiln-test-")
            .tempdir()
            .expect("tempdir");
        let data_dir = root.path().join("data");
        std::fs::create_dir(&data_dir).expect("create data dir");
        prepare(&data_dir);
        let mut server = KilnServer {
            root,
            data_dir,
            child: None,
            addr: "127.0.0.1:1".parse().unwrap(),
            starts: 0,
            creds: Creds {
                access_key_id: String::new(),
                secret_access_key: String::new(),
            },
        };
        server.spawn();
        server.creds = server.read_credentials();
        server
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Keys of the first account (from `DIR/credentials`, profile `kiln`).
    pub fn creds(&self) -> Creds {
        self.creds.clone()
    }

    /// A client for the first account in `region`.
    pub fn client(&self, region: &str) -> Client {
        Client::new(&self.url(), self.creds(), region)
    }

    /// A client for other keys in `region`.
    pub fn client_with(&self, creds: Creds, region: &str) -> Client {
        Client::new(&self.url(), creds, region)
    }

    /// Everything the server wrote to stdout/stderr across all its starts.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.root.path().join(format!("server-{i}.log"));
            out.push_str(&format!("----- {} -----\n", p.display()));
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }

    /// `kill -9` the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL kiln"); // SIGKILL on Unix
            child.wait().expect("reap kiln");
        }
    }

    /// Starts the server again on the same data directory (on a new port: see [`Self::url`]).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `kiln --data-dir DIR <args>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(kiln_bin())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kiln CLI")
    }

    /// Runs `kiln --data-dir DIR account create NAME [extra] --json` and parses the answer.
    pub fn create_account(&self, name: &str, extra: &[&str]) -> Account {
        let mut args = vec!["account", "create", name];
        args.extend_from_slice(extra);
        args.push("--json");
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "kiln account create {name} failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_account_json(&String::from_utf8_lossy(&out.stdout))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let port = free_port();
        self.addr = format!("127.0.0.1:{port}").parse().unwrap();
        let log_path = self.root.path().join(format!("server-{}.log", self.starts));
        let log = File::create(&log_path).expect("create log file");
        let child = Command::new(kiln_bin())
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            // No KVM probe: these tests boot no VM, and the probe occupies a core for up
            // to 20 s on hosts where KVM does not work.
            .args(["--accelerator", "tcg"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", kiln_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "kiln serve exited during startup with {status}\n{}",
                    self.logs()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "kiln serve did not accept connections within 30 s\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads `DIR/credentials`, waiting (bounded) in case it is written just after the port opens.
    fn read_credentials(&self) -> Creds {
        let path = self.data_dir.join("credentials");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(creds) = parse_credentials(&text, "kiln") {
                return creds;
            }
            if Instant::now() > deadline {
                panic!(
                    "no [kiln] profile with both keys in {}:\n{text}\n{}",
                    path.display(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KilnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What `account create --json` prints.
#[derive(Clone, Debug)]
pub struct Account {
    pub account_id: String,
    pub creds: Creds,
}

pub fn parse_account_json(stdout: &str) -> Account {
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("account JSON does not parse ({e}): {stdout:?}"));
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("account JSON lacks string {k}: {stdout}"))
            .to_string()
    };
    Account {
        account_id: field("AccountId"),
        creds: Creds {
            access_key_id: field("AccessKeyId"),
            secret_access_key: field("SecretAccessKey"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// SigV4 client
// ---------------------------------------------------------------------------------------------

/// RFC 3986 unreserved characters stay, everything else is %XX (uppercase), as SigV4 wants.
const AWS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn aws_encode(s: &str) -> String {
    utf8_percent_encode(s, AWS_ENCODE).to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `(20240102T030405Z, 20240102)` for `t`.
pub fn amz_date(t: SystemTime) -> (String, String) {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let s = dt.format(&fmt).expect("format date");
    let d = s[..8].to_string();
    (s, d)
}

/// Canonical query string: encoded pairs sorted by key, then value.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (aws_encode(k), aws_encode(v)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Knobs for deliberately wrong or unusual signatures.
#[derive(Clone, Debug)]
pub struct SignOptions {
    /// Signing time (and `X-Amz-Date`).
    pub time: SystemTime,
    /// Sign with this secret instead of the client's.
    pub secret: Option<String>,
    /// Send this access key id instead of the client's.
    pub access_key_id: Option<String>,
    /// Put `x-amz-content-sha256: UNSIGNED-PAYLOAD` in the (signed) headers.
    pub unsigned_payload: bool,
    /// Region in the credential scope instead of the client's.
    pub region: Option<String>,
    /// Payload hash to sign instead of the body's (to simulate a body changed after signing).
    pub payload_hash: Option<String>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            time: SystemTime::now(),
            secret: None,
            access_key_id: None,
            unsigned_payload: false,
            region: None,
            payload_hash: None,
        }
    }
}

/// A blocking SigV4 client for one account and region.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub creds: Creds,
    pub region: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(url: &str, creds: Creds, region: &str) -> Client {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Client {
            url: url.trim_end_matches('/').to_string(),
            creds,
            region: region.to_string(),
            http,
        }
    }

    /// Same keys and HTTP pool, other region.
    pub fn in_region(&self, region: &str) -> Client {
        Client {
            region: region.to_string(),
            ..self.clone()
        }
    }

    /// Same HTTP pool and region, other keys.
    pub fn with_creds(&self, creds: Creds) -> Client {
        Client {
            creds,
            ..self.clone()
        }
    }

    fn host(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    }

    /// Signs and sends one request. `headers` are extra headers (all signed); `query` is the
    /// decoded query string. Transport errors come back as `Err`.
    #[allow(clippy::too_many_arguments)]
    pub fn try_send_signed(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Vec<u8>,
        service: &str,
        opts: &SignOptions,
    ) -> Result<(u16, String), reqwest::Error> {
        self.try_send_signed_raw(method, path, query, headers, body, service, opts)
            .map(|r| (r.status, r.text()))
    }

    /// Like [`Self::try_send_signed`], but the answer keeps its headers and raw body bytes
    /// (for binary EBS answers such as GetSnapshotBlock).
    #[allow(clippy::too_many_arguments)]
    pub fn try_send_signed_raw(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Vec<u8>,
        service: &str,
        opts: &SignOptions,
    ) -> Result<RawResponse, reqwest::Error> {
        let (amz_date, date) = amz_date(opts.time);
        let region = opts.region.as_deref().unwrap_or(&self.region);
        let key_id = opts
            .access_key_id
            .as_deref()
            .unwrap_or(&self.creds.access_key_id);
        let secret = opts
            .secret
            .as_deref()
            .unwrap_or(&self.creds.secret_access_key);
        let payload_hash = if opts.unsigned_payload {
            "UNSIGNED-PAYLOAD".to_string()
        } else {
            opts.payload_hash
                .clone()
                .unwrap_or_else(|| sha256_hex(&body))
        };

        let mut hdrs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        hdrs.push(("host".into(), self.host()));
        hdrs.push(("x-amz-date".into(), amz_date.clone()));
        if opts.unsigned_payload {
            hdrs.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
        }
        hdrs.sort();
        let canonical_headers: String = hdrs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = hdrs
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let cq = canonical_query(query);
        let canonical_request = format!(
            "{method}\n{path}\n{cq}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
        );
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = aws_sigv4::sign::v4::generate_signing_key(secret, opts.time, region, service);
        let signature = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        );

        let url = if cq.is_empty() {
            format!("{}{path}", self.url)
        } else {
            format!("{}{path}?{cq}", self.url)
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", authorization);
        for (k, v) in &hdrs {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.body(body).send()?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.bytes()?.to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn send_signed(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Vec<u8>,
        service: &str,
        opts: &SignOptions,
    ) -> (u16, String) {
        self.try_send_signed(method, path, query, headers, body, service, opts)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
    }

    /// The form body of an EC2 Query call.
    pub fn query_body(action: &str, params: &[(String, String)]) -> Vec<u8> {
        let mut pairs = vec![("Action".to_string(), action.to_string())];
        pairs.push(("Version".to_string(), EC2_VERSION.to_string()));
        pairs.extend(params.iter().cloned());
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", aws_encode(k), aws_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    }

    /// EC2 Query call with explicit signing options; transport errors come back as `Err`.
    pub fn try_ec2_opts(
        &self,
        action: &str,
        params: &[(String, String)],
        opts: &SignOptions,
    ) -> Result<(u16, String), reqwest::Error> {
        let body = Self::query_body(action, params);
        let headers = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        self.try_send_signed("POST", "/", &[], &headers, body, "ec2", opts)
    }

    /// Correctly signed EC2 Query call; transport errors come back as `Err`.
    pub fn try_ec2(
        &self,
        action: &str,
        params: &[(String, String)],
    ) -> Result<(u16, String), reqwest::Error> {
        self.try_ec2_opts(action, params, &SignOptions::default())
    }

    /// EC2 Query call with explicit signing options.
    pub fn ec2_opts(
        &self,
        action: &str,
        params: &[(String, String)],
        opts: &SignOptions,
    ) -> (u16, String) {
        self.try_ec2_opts(action, params, opts)
            .unwrap_or_else(|e| panic!("{action} failed at transport level: {e}"))
    }

    /// Correctly signed EC2 Query call: `POST /`, form body, `Version=2016-11-15`.
    pub fn ec2(&self, action: &str, params: &[(&str, &str)]) -> (u16, String) {
        self.ec2_owned(action, &p(params))
    }

    pub fn ec2_owned(&self, action: &str, params: &[(String, String)]) -> (u16, String) {
        self.ec2_opts(action, params, &SignOptions::default())
    }

    /// EC2 call that must answer 200; returns the body.
    pub fn ec2_ok(&self, action: &str, params: &[(String, String)]) -> String {
        let (status, body) = self.ec2_owned(action, params);
        assert_eq!(status, 200, "{action} {params:?} answered {status}: {body}");
        body
    }

    /// A presigned `GET /?Action=..` URL (query-string SigV4, `X-Amz-Expires` seconds).
    pub fn presign_url(
        &self,
        action: &str,
        params: &[(String, String)],
        expires: u32,
        time: SystemTime,
    ) -> String {
        let (amz_date, date) = amz_date(time);
        let scope = format!("{date}/{}/ec2/aws4_request", self.region);
        let mut query = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), EC2_VERSION.to_string()),
        ];
        query.extend(params.iter().cloned());
        query.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
        query.push((
            "X-Amz-Credential".into(),
            format!("{}/{scope}", self.creds.access_key_id),
        ));
        query.push(("X-Amz-Date".into(), amz_date.clone()));
        query.push(("X-Amz-Expires".into(), expires.to_string()));
        query.push(("X-Amz-SignedHeaders".into(), "host".into()));
        let cq = canonical_query(&query);
        let canonical_request = format!(
            "GET\n/\n{cq}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD",
            self.host()
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = aws_sigv4::sign::v4::generate_signing_key(
            &self.creds.secret_access_key,
            time,
            &self.region,
            "ec2",
        );
        let signature = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
        format!("{}/?{cq}&X-Amz-Signature={signature}", self.url)
    }

    /// Plain GET of a full URL (no Authorization header).
    pub fn get_url(&self, url: &str) -> (u16, String) {
        let resp = self
            .http
            .get(url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Unsigned POST of an EC2 Query form (no Authorization header at all).
    pub fn post_unsigned(&self, action: &str, params: &[(String, String)]) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}/", self.url))
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Self::query_body(action, params))
            .send()
            .unwrap_or_else(|e| panic!("POST {action}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// EBS direct StartSnapshot + CompleteSnapshot(0 blocks): returns the new snapshot id.
    pub fn try_create_completed_snapshot(&self) -> Result<String, String> {
        let opts = SignOptions::default();
        let json = vec![("content-type".to_string(), "application/json".to_string())];
        let (status, body) = self
            .try_send_signed(
                "POST",
                "/snapshots",
                &[],
                &json,
                br#"{"VolumeSize":8}"#.to_vec(),
                "ebs",
                &opts,
            )
            .map_err(|e| format!("StartSnapshot transport: {e}"))?;
        if status != 201 {
            return Err(format!("StartSnapshot answered {status}: {body}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("StartSnapshot JSON ({e}): {body}"))?;
        let id = v
            .get("SnapshotId")
            .and_then(|s| s.as_str())
            .ok_or_else(|| format!("StartSnapshot without SnapshotId: {body}"))?
            .to_string();
        let headers = vec![("x-amz-ChangedBlocksCount".to_string(), "0".to_string())];
        let (status, body) = self
            .try_send_signed(
                "POST",
                &format!("/snapshots/completion/{id}"),
                &[],
                &headers,
                Vec::new(),
                "ebs",
                &opts,
            )
            .map_err(|e| format!("CompleteSnapshot transport: {e}"))?;
        if status != 202 {
            return Err(format!("CompleteSnapshot {id} answered {status}: {body}"));
        }
        Ok(id)
    }

    pub fn create_completed_snapshot(&self) -> String {
        self.try_create_completed_snapshot()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every image `DescribeImages Owner=self` lists (no MaxResults; follows a nextToken if any).
    pub fn own_images(&self) -> Vec<Image> {
        self.describe_images(&p(&[("Owner.1", "self")]))
    }

    /// Every image `DescribeImages` returns for these parameters (follows a nextToken if any).
    pub fn describe_images(&self, params: &[(String, String)]) -> Vec<Image> {
        self.all_pages("DescribeImages", params)
            .iter()
            .flat_map(|b| parse_images(b))
            .collect()
    }

    /// Every snapshot `DescribeSnapshots Owner=self` lists (follows a nextToken if any).
    pub fn own_snapshots(&self) -> Vec<Snapshot> {
        self.all_pages("DescribeSnapshots", &p(&[("Owner.1", "self")]))
            .iter()
            .flat_map(|b| parse_snapshots(b))
            .collect()
    }

    /// Bodies of every page of `action` (each must answer 200).
    pub fn all_pages(&self, action: &str, params: &[(String, String)]) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let mut q = params.to_vec();
            if let Some(t) = token.take() {
                q.push(("NextToken".into(), t));
            }
            let body = self.ec2_ok(action, &q);
            token = next_token(&body);
            bodies.push(body);
            if token.is_none() {
                return bodies;
            }
        }
        panic!("{action} {params:?} did not end within 10000 pages");
    }

    pub fn own_snapshot_ids(&self) -> HashSet<String> {
        self.own_snapshots().into_iter().map(|s| s.id).collect()
    }
}

/// Owned parameter list from borrowed pairs.
pub fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// RegisterImage parameters: an HVM x86_64 image with root `/dev/xvda` on `snapshot` and
/// TagSpecifications for `tags`.
pub fn register_params(name: &str, snapshot: &str, tags: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = p(&[
        ("Name", name),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
    ]);
    if !tags.is_empty() {
        v.push(("TagSpecification.1.ResourceType".into(), "image".into()));
        for (i, (k, val)) in tags.iter().enumerate() {
            v.push((
                format!("TagSpecification.1.Tag.{}.Key", i + 1),
                k.to_string(),
            ));
            v.push((
                format!("TagSpecification.1.Tag.{}.Value", i + 1),
                val.to_string(),
            ));
        }
    }
    v
}

/// CreateTags parameters for one resource.
pub fn tag_params(resource: &str, tags: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![("ResourceId.1".to_string(), resource.to_string())];
    for (i, (k, val)) in tags.iter().enumerate() {
        v.push((format!("Tag.{}.Key", i + 1), k.to_string()));
        v.push((format!("Tag.{}.Value", i + 1), val.to_string()));
    }
    v
}

/// Registers an image and returns its id; panics unless the answer is 200 with an `imageId`.
pub fn register_image(c: &Client, name: &str, snapshot: &str, tags: &[(&str, &str)]) -> String {
    let body = c.ec2_ok("RegisterImage", &register_params(name, snapshot, tags));
    xml_value(&body, "imageId").unwrap_or_else(|| panic!("RegisterImage without imageId: {body}"))
}

// ---------------------------------------------------------------------------------------------
// XML
// ---------------------------------------------------------------------------------------------

/// A minimal XML element: local name, trimmed text, children.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn text_of(&self, name: &str) -> Option<String> {
        self.child(name).map(|c| c.text.clone())
    }

    /// `<set><item/>…</set>` → the items (empty if `set` is missing).
    pub fn items(&self, set: &str) -> Vec<&Node> {
        self.child(set)
            .map(|s| s.children.iter().filter(|c| c.name == "item").collect())
            .unwrap_or_default()
    }

    /// First descendant (depth-first, self included) named `name`.
    pub fn find(&self, name: &str) -> Option<&Node> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// Parses `xml` into its document element; panics on malformed XML.
pub fn parse_xml(xml: &str) -> Node {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack = vec![Node {
        name: "#document".into(),
        ..Default::default()
    }];
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => stack.push(Node {
                name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                ..Default::default()
            }),
            Ok(Event::Empty(e)) => {
                let n = Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Default::default()
                };
                stack.last_mut().unwrap().children.push(n);
            }
            Ok(Event::End(_)) => {
                let mut n = stack.pop().expect("balanced XML");
                n.text = n.text.trim().to_string();
                stack.last_mut().expect("balanced XML").children.push(n);
            }
            Ok(Event::Text(t)) => {
                let s = t
                    .unescape()
                    .unwrap_or_else(|e| panic!("bad XML text ({e}): {xml}"));
                stack.last_mut().unwrap().text.push_str(&s);
            }
            Ok(Event::CData(c)) => {
                stack
                    .last_mut()
                    .unwrap()
                    .text
                    .push_str(&String::from_utf8_lossy(&c.into_inner()));
            }
            Ok(Event::Eof) => break,
            Err(e) => panic!("malformed XML ({e}): {xml}"),
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "unclosed XML elements: {xml}");
    stack
        .pop()
        .unwrap()
        .children
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("empty XML: {xml:?}"))
}

/// Text of the first element named `tag` anywhere in `xml` (string search, no parsing).
pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].to_string())
}

/// Texts of every element named `tag` in `xml` (string search, no parsing).
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        match after.find(&close) {
            Some(j) => {
                out.push(after[..j].to_string());
                rest = &after[j + close.len()..];
            }
            None => break,
        }
    }
    out
}

/// The AWS error code of an error answer (`<Response><Errors><Error><Code>`).
pub fn error_code(body: &str) -> Option<String> {
    xml_value(body, "Code")
}

/// The `nextToken` of a paginated answer, `None` if absent or empty.
pub fn next_token(body: &str) -> Option<String> {
    let root = parse_xml(body);
    root.text_of("nextToken").filter(|t| !t.is_empty())
}

/// One image as DescribeImages shows it.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub state: String,
    pub owner_id: String,
    pub description: String,
    pub snapshot_ids: Vec<String>,
    pub device_names: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl Image {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Images of a DescribeImages answer (`imagesSet/item`).
pub fn parse_images(body: &str) -> Vec<Image> {
    let root = parse_xml(body);
    root.items("imagesSet")
        .into_iter()
        .map(|it| Image {
            id: it.text_of("imageId").unwrap_or_default(),
            name: it.text_of("name").unwrap_or_default(),
            state: it.text_of("imageState").unwrap_or_default(),
            owner_id: it.text_of("imageOwnerId").unwrap_or_default(),
            description: it.text_of("description").unwrap_or_default(),
            snapshot_ids: it
                .items("blockDeviceMapping")
                .iter()
                .filter_map(|b| b.child("ebs").and_then(|e| e.text_of("snapshotId")))
                .collect(),
            device_names: it
                .items("blockDeviceMapping")
                .iter()
                .filter_map(|b| b.text_of("deviceName"))
                .collect(),
            tags: it
                .items("tagSet")
                .iter()
                .map(|t| {
                    (
                        t.text_of("key").unwrap_or_default(),
                        t.text_of("value").unwrap_or_default(),
                    )
                })
                .collect(),
        })
        .collect()
}

/// One snapshot as DescribeSnapshots shows it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub id: String,
    pub state: String,
    pub owner_id: String,
}

/// Snapshots of a DescribeSnapshots answer (`snapshotSet/item`).
pub fn parse_snapshots(body: &str) -> Vec<Snapshot> {
    let root = parse_xml(body);
    root.items("snapshotSet")
        .into_iter()
        .map(|it| Snapshot {
            id: it.text_of("snapshotId").unwrap_or_default(),
            state: it.text_of("status").unwrap_or_default(),
            owner_id: it.text_of("ownerId").unwrap_or_default(),
        })
        .collect()
}

/// `(resourceId, key, value)` triples of a DescribeTags answer (`tagSet/item`).
pub fn parse_tags(body: &str) -> Vec<(String, String, String)> {
    let root = parse_xml(body);
    root.items("tagSet")
        .into_iter()
        .map(|t| {
            (
                t.text_of("resourceId").unwrap_or_default(),
                t.text_of("key").unwrap_or_default(),
                t.text_of("value").unwrap_or_default(),
            )
        })
        .collect()
}

/// Duplicated values of `items` (each reported once), for assertion messages.
pub fn duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut dup = HashSet::new();
    for i in items {
        if !seen.insert(i) {
            dup.insert(i.to_string());
        }
    }
    let mut v: Vec<_> = dup.into_iter().collect();
    v.sort();
    v
}

/// Checks the invariants of one account and region: image names unique, every image's block
/// device mapping names only snapshots that exist. Returns the images.
pub fn assert_image_invariants(c: &Client) -> Vec<Image> {
    let images = c.own_images();
    let dup = duplicates(images.iter().map(|i| i.name.as_str()));
    assert!(
        dup.is_empty(),
        "image names not unique in {}: {dup:?}",
        c.region
    );
    let snaps = c.own_snapshot_ids();
    for img in &images {
        assert!(
            !img.snapshot_ids.is_empty(),
            "image {} ({}) has no EBS snapshot in its mapping",
            img.id,
            img.name
        );
        for s in &img.snapshot_ids {
            assert!(
                snaps.contains(s),
                "image {} ({}) references missing snapshot {s}",
                img.id,
                img.name
            );
        }
    }
    images
}

// ---------------------------------------------------------------------------------------------
// EBS direct APIs: snapshot blocks
// ---------------------------------------------------------------------------------------------

/// Size of every EBS block (the EBS direct APIs' block size).
pub const EBS_BLOCK_SIZE: usize = 524_288;

/// An answer with its headers (lowercase names) and raw body bytes.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), for messages and JSON.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer {} is not JSON ({e}): {}",
                self.status,
                self.text_excerpt()
            )
        })
    }

    /// At most 300 characters of the body, for assertion messages (never a whole block).
    pub fn text_excerpt(&self) -> String {
        let t = self.text();
        if t.len() > 300 {
            let mut end = 300;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &t[..end], self.body.len())
        } else {
            t
        }
    }

    /// The EBS error type (`__type` of the JSON body, else the `x-amzn-ErrorType` header).
    pub fn error_type(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("__type").and_then(|t| t.as_str()).map(String::from))
            .or_else(|| self.header("x-amzn-errortype").map(String::from))
    }
}

/// Base64 of the SHA-256 of `data` (the EBS `x-amz-Checksum` of a block).
pub fn checksum_b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

/// The LINEAR aggregated checksum of blocks given in index order: base64 of the SHA-256 of
/// the concatenated SHA-256 digests of the blocks.
pub fn linear_checksum_b64<'a>(
    blocks_in_index_order: impl IntoIterator<Item = &'a [u8]>,
) -> String {
    use base64::Engine;
    let mut h = Sha256::new();
    for b in blocks_in_index_order {
        h.update(Sha256::digest(b));
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A block of random bytes.
pub fn random_block() -> Vec<u8> {
    use rand::RngCore;
    let mut b = vec![0u8; EBS_BLOCK_SIZE];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

/// Where the local block store keeps a block: `DIR/blocks/ab/<sha256hex>`.
pub fn block_file(data_dir: &Path, data: &[u8]) -> PathBuf {
    block_file_for_hash(data_dir, &sha256_hex(data))
}

/// Where the local block store keeps the block with this (hex) hash.
pub fn block_file_for_hash(data_dir: &Path, hash_hex: &str) -> PathBuf {
    data_dir.join("blocks").join(&hash_hex[..2]).join(hash_hex)
}

impl KilnServer {
    /// Runs `kiln --data-dir DIR scrub`.
    pub fn scrub(&self) -> Output {
        self.cli(&["scrub"])
    }

    /// Runs `kiln scrub` and panics unless it exits 0 and says `store is clean`.
    pub fn assert_scrub_clean(&self) {
        let out = self.scrub();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("store is clean"),
            "kiln scrub is not clean: {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Client {
    fn ebs_raw(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<RawResponse, reqwest::Error> {
        self.try_send_signed_raw(
            method,
            path,
            query,
            headers,
            body,
            "ebs",
            &SignOptions::default(),
        )
    }

    /// EBS StartSnapshot with a JSON body; transport errors come back as `Err`.
    pub fn try_start_snapshot_json(
        &self,
        body: &serde_json::Value,
    ) -> Result<RawResponse, reqwest::Error> {
        let json = vec![("content-type".to_string(), "application/json".to_string())];
        self.ebs_raw(
            "POST",
            "/snapshots",
            &[],
            &json,
            body.to_string().into_bytes(),
        )
    }

    /// EBS StartSnapshot(VolumeSize) that must answer 201 `pending`; returns the snapshot id.
    pub fn start_snapshot(&self, volume_size_gib: i64) -> String {
        let r = self
            .try_start_snapshot_json(&serde_json::json!({ "VolumeSize": volume_size_gib }))
            .unwrap_or_else(|e| panic!("StartSnapshot transport: {e}"));
        assert_eq!(r.status, 201, "StartSnapshot: {}", r.text_excerpt());
        let v = r.json();
        assert_eq!(v["Status"], "pending", "StartSnapshot: {v}");
        v["SnapshotId"]
            .as_str()
            .unwrap_or_else(|| panic!("StartSnapshot without SnapshotId: {v}"))
            .to_string()
    }

    /// EBS PutSnapshotBlock with correct `x-amz-Data-Length`, `x-amz-Checksum` (base64
    /// SHA-256) and `x-amz-Checksum-Algorithm: SHA256`; transport errors come back as `Err`.
    pub fn try_put_block(
        &self,
        snapshot_id: &str,
        index: i64,
        data: &[u8],
    ) -> Result<RawResponse, reqwest::Error> {
        let headers = vec![
            ("x-amz-Data-Length".to_string(), data.len().to_string()),
            ("x-amz-Checksum".to_string(), checksum_b64(data)),
            ("x-amz-Checksum-Algorithm".to_string(), "SHA256".to_string()),
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
        ];
        self.ebs_raw(
            "PUT",
            &format!("/snapshots/{snapshot_id}/blocks/{index}"),
            &[],
            &headers,
            data.to_vec(),
        )
    }

    /// PutSnapshotBlock that must answer 201 echoing the block's checksum.
    pub fn put_block(&self, snapshot_id: &str, index: i64, data: &[u8]) {
        let r = self
            .try_put_block(snapshot_id, index, data)
            .unwrap_or_else(|e| panic!("PutSnapshotBlock {snapshot_id}/{index} transport: {e}"));
        assert_eq!(
            r.status,
            201,
            "PutSnapshotBlock {snapshot_id}/{index}: {}",
            r.text_excerpt()
        );
        assert_eq!(
            r.header("x-amz-checksum"),
            Some(checksum_b64(data).as_str()),
            "PutSnapshotBlock {snapshot_id}/{index} echoed another checksum"
        );
    }

    /// EBS CompleteSnapshot with `x-amz-ChangedBlocksCount` and, if given, a LINEAR
    /// `x-amz-Checksum`; transport errors come back as `Err`.
    pub fn try_complete_snapshot(
        &self,
        snapshot_id: &str,
        changed_blocks: usize,
        linear_checksum: Option<&str>,
    ) -> Result<RawResponse, reqwest::Error> {
        let mut headers = vec![(
            "x-amz-ChangedBlocksCount".to_string(),
            changed_blocks.to_string(),
        )];
        if let Some(c) = linear_checksum {
            headers.push(("x-amz-Checksum".to_string(), c.to_string()));
            headers.push(("x-amz-Checksum-Algorithm".to_string(), "SHA256".to_string()));
            headers.push((
                "x-amz-Checksum-Aggregation-Method".to_string(),
                "LINEAR".to_string(),
            ));
        }
        self.ebs_raw(
            "POST",
            &format!("/snapshots/completion/{snapshot_id}"),
            &[],
            &headers,
            Vec::new(),
        )
    }

    /// CompleteSnapshot that must answer 202; returns the `Status` it reports.
    pub fn complete_snapshot(
        &self,
        snapshot_id: &str,
        changed_blocks: usize,
        linear_checksum: Option<&str>,
    ) -> String {
        let r = self
            .try_complete_snapshot(snapshot_id, changed_blocks, linear_checksum)
            .unwrap_or_else(|e| panic!("CompleteSnapshot {snapshot_id} transport: {e}"));
        assert_eq!(
            r.status,
            202,
            "CompleteSnapshot {snapshot_id}: {}",
            r.text_excerpt()
        );
        r.json()["Status"]
            .as_str()
            .unwrap_or_else(|| panic!("CompleteSnapshot without Status: {}", r.text()))
            .to_string()
    }

    /// Puts every block of `blocks` (index → bytes) and completes the snapshot with the
    /// matching count and LINEAR checksum; panics unless it ends `completed`.
    pub fn put_blocks_and_complete(
        &self,
        snapshot_id: &str,
        blocks: &std::collections::BTreeMap<i64, Vec<u8>>,
    ) {
        for (i, data) in blocks {
            self.put_block(snapshot_id, *i, data);
        }
        let sum = linear_checksum_b64(blocks.values().map(|b| b.as_slice()));
        let status = self.complete_snapshot(snapshot_id, blocks.len(), Some(&sum));
        assert_eq!(status, "completed", "CompleteSnapshot {snapshot_id}");
    }

    /// One page of ListSnapshotBlocks; transport errors come back as `Err`.
    pub fn try_list_blocks_page(
        &self,
        snapshot_id: &str,
        page_token: Option<&str>,
    ) -> Result<RawResponse, reqwest::Error> {
        let mut query = Vec::new();
        if let Some(t) = page_token {
            query.push(("pageToken".to_string(), t.to_string()));
        }
        self.ebs_raw(
            "GET",
            &format!("/snapshots/{snapshot_id}/blocks"),
            &query,
            &[],
            Vec::new(),
        )
    }

    /// Every `(BlockIndex, BlockToken)` ListSnapshotBlocks returns (follows NextToken);
    /// panics unless every page answers 200.
    pub fn list_blocks(&self, snapshot_id: &str) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let r = self
                .try_list_blocks_page(snapshot_id, token.as_deref())
                .unwrap_or_else(|e| panic!("ListSnapshotBlocks {snapshot_id} transport: {e}"));
            assert_eq!(
                r.status,
                200,
                "ListSnapshotBlocks {snapshot_id}: {}",
                r.text_excerpt()
            );
            let v = r.json();
            for b in v["Blocks"].as_array().cloned().unwrap_or_default() {
                let index = b["BlockIndex"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("block without BlockIndex: {b}"));
                let tok = b["BlockToken"]
                    .as_str()
                    .unwrap_or_else(|| panic!("block without BlockToken: {b}"))
                    .to_string();
                out.push((index, tok));
            }
            token = v["NextToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(String::from);
            if token.is_none() {
                return out;
            }
        }
        panic!("ListSnapshotBlocks {snapshot_id} did not end within 10000 pages");
    }

    /// GetSnapshotBlock; transport errors come back as `Err`.
    pub fn try_get_block(
        &self,
        snapshot_id: &str,
        index: i64,
        block_token: &str,
    ) -> Result<RawResponse, reqwest::Error> {
        self.ebs_raw(
            "GET",
            &format!("/snapshots/{snapshot_id}/blocks/{index}"),
            &[("blockToken".to_string(), block_token.to_string())],
            &[],
            Vec::new(),
        )
    }

    /// GetSnapshotBlock that must answer 200 with a checksum and data length matching the
    /// bytes; returns the bytes.
    pub fn get_block(&self, snapshot_id: &str, index: i64, block_token: &str) -> Vec<u8> {
        let r = self
            .try_get_block(snapshot_id, index, block_token)
            .unwrap_or_else(|e| panic!("GetSnapshotBlock {snapshot_id}/{index} transport: {e}"));
        assert_eq!(
            r.status,
            200,
            "GetSnapshotBlock {snapshot_id}/{index}: {}",
            r.text_excerpt()
        );
        assert_eq!(
            r.header("x-amz-checksum"),
            Some(checksum_b64(&r.body).as_str()),
            "GetSnapshotBlock {snapshot_id}/{index}: x-amz-Checksum does not match the bytes"
        );
        assert_eq!(
            r.header("x-amz-data-length"),
            Some(r.body.len().to_string().as_str()),
            "GetSnapshotBlock {snapshot_id}/{index}: x-amz-Data-Length does not match the bytes"
        );
        r.body
    }

    /// Every listed block of a completed snapshot, read back (index → bytes). All-zero blocks
    /// are not listed, so they do not appear.
    pub fn read_snapshot(&self, snapshot_id: &str) -> std::collections::BTreeMap<i64, Vec<u8>> {
        self.list_blocks(snapshot_id)
            .into_iter()
            .map(|(i, tok)| (i, self.get_block(snapshot_id, i, &tok)))
            .collect()
    }

    /// Panics unless the snapshot's listed blocks are exactly the non-zero blocks of
    /// `expected` (index → bytes) and each reads back identical.
    pub fn assert_snapshot_reads_back(
        &self,
        snapshot_id: &str,
        expected: &std::collections::BTreeMap<i64, Vec<u8>>,
    ) {
        let want: Vec<i64> = expected
            .iter()
            .filter(|(_, d)| d.iter().any(|&b| b != 0))
            .map(|(i, _)| *i)
            .collect();
        let listed = self.list_blocks(snapshot_id);
        let got: Vec<i64> = listed.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            got, want,
            "snapshot {snapshot_id}: listed block indexes differ from the blocks written"
        );
        for (i, tok) in &listed {
            let data = self.get_block(snapshot_id, *i, tok);
            assert!(
                data == expected[i],
                "snapshot {snapshot_id} block {i} reads back different bytes (sha256 {} instead of {})",
                sha256_hex(&data),
                sha256_hex(&expected[i])
            );
        }
    }

    /// The EC2 `status` of a snapshot as DescribeSnapshots Owner=self shows it, if listed.
    pub fn snapshot_state(&self, snapshot_id: &str) -> Option<String> {
        self.own_snapshots()
            .into_iter()
            .find(|s| s.id == snapshot_id)
            .map(|s| s.state)
    }
}
