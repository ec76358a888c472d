//! A small signed client for Kiln's own API, used by the `kiln image` commands so that they
//! go through the running server like any other client.

use crate::api::sigv4::{sign_request, SignedRequest};
use crate::error::{Error, Result};
use quick_xml::events::Event;
use std::path::Path;
use std::time::Duration;

/// Credentials and endpoint of a client.
pub struct Client {
    endpoint: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    http: reqwest::blocking::Client,
}

/// Reads the `kiln` profile of an AWS shared-credentials file.
pub fn read_credentials(path: &Path, profile: &str) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidParameterValue(format!("reading {}: {e}", path.display())))?;
    let mut in_profile = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_profile = line == format!("[{profile}]");
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
    match (id, secret) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(Error::InvalidParameterValue(format!(
            "{} has no profile [{profile}] with both keys",
            path.display()
        ))),
    }
}

fn amz_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

impl Client {
    /// A client for `endpoint` (like `http://127.0.0.1:7780`) in `region`.
    pub fn new(
        endpoint: &str,
        region: &str,
        access_key_id: String,
        secret_access_key: String,
    ) -> Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::InternalError(format!("http client: {e}")))?;
        Ok(Client {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            access_key_id,
            secret_access_key,
            http,
        })
    }

    fn send(
        &self,
        method: &str,
        service: &str,
        path_and_query: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(u16, Vec<u8>)> {
        let host = self
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&self.endpoint)
            .to_string();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let amz_date = amz_now();
        let headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            ("host".to_string(), host),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        let signed = SignedRequest {
            method,
            path,
            query,
            headers: &headers,
            body: &body,
        };
        let authorization = sign_request(
            &signed,
            &self.access_key_id,
            &self.secret_access_key,
            &self.region,
            service,
            &amz_date,
            &["content-type", "host", "x-amz-date"],
        )?;
        let url = format!("{}{path_and_query}", self.endpoint);
        let request = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url).body(body),
        };
        let response = request
            .header("content-type", content_type)
            .header("x-amz-date", amz_date)
            .header("authorization", authorization)
            .send()
            .map_err(|e| {
                Error::InternalError(format!("cannot reach Kiln at {}: {e}", self.endpoint))
            })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .map_err(|e| Error::InternalError(format!("reading the answer: {e}")))?;
        Ok((status, bytes.to_vec()))
    }

    /// Calls an EC2 Query action; an error answer becomes an error with its code and message.
    pub fn ec2(&self, params: &[(&str, &str)]) -> Result<String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Version", "2016-11-15");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let (status, body) = self.send(
            "POST",
            "ec2",
            "/",
            form.finish().into_bytes(),
            "application/x-www-form-urlencoded; charset=utf-8",
        )?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status >= 300 {
            let code = xml_text(&text, "Code").unwrap_or_default();
            let message = xml_text(&text, "Message").unwrap_or_default();
            return Err(Error::InvalidParameterValue(format!("{code}: {message}")));
        }
        Ok(text)
    }

    /// GET on the EBS direct API; returns the body of a 200 answer.
    pub fn ebs_get(&self, path_and_query: &str) -> Result<Vec<u8>> {
        let (status, body) =
            self.send("GET", "ebs", path_and_query, Vec::new(), "application/json")?;
        if status != 200 {
            return Err(Error::InvalidParameterValue(format!(
                "EBS {path_and_query}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body)
    }
}

/// Text of the first element named `tag`.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    xml_all(xml, tag).into_iter().next()
}

/// Texts of every element named `tag`, in document order.
pub fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut inside = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => inside = e.name().as_ref() == tag.as_bytes(),
            Ok(Event::Text(t)) if inside => {
                if let Ok(text) = t.unescape() {
                    out.push(text.into_owned());
                }
                inside = false;
            }
            Ok(Event::End(_)) => inside = false,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_all_finds_every_element_in_order() {
        let xml = "<a><item><snapshotId>s1</snapshotId></item><item><snapshotId>s2</snapshotId></item></a>";
        assert_eq!(xml_all(xml, "snapshotId"), vec!["s1", "s2"]);
        assert_eq!(xml_text(xml, "missing"), None);
    }

    #[test]
    fn read_credentials_profile_kiln_reads_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[other]\naws_access_key_id = X\n[kiln]\naws_access_key_id = AKIA1\naws_secret_access_key = s3cr3t\n").unwrap();
        assert_eq!(
            read_credentials(&path, "kiln").unwrap(),
            ("AKIA1".into(), "s3cr3t".into())
        );
    }
}
