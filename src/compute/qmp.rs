//! A minimal QMP (QEMU Machine Protocol) client: JSON lines over a unix socket.
//!
//! QEMU greets with `{"QMP": ...}`; the client answers `qmp_capabilities`, then sends
//! commands and reads until the matching `return` or `error` (skipping asynchronous
//! `event` lines). See QEMU's `docs/interop/qmp-spec`.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one command may take before the client gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected QMP session.
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QmpClient {
    /// Connects to QEMU's QMP socket and leaves capabilities negotiation mode.
    pub fn connect(socket: &Path) -> Result<QmpClient> {
        let stream = UnixStream::connect(socket).map_err(|e| qmp_error("connect", e))?;
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| qmp_error("configure", e))?;
        let writer = stream.try_clone().map_err(|e| qmp_error("connect", e))?;
        let mut client = QmpClient {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::InternalError(format!(
                "QMP: unexpected greeting {greeting}"
            )));
        }
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| qmp_error(command, e))?;
        loop {
            let message = self.read_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(Error::InternalError(format!("QMP {command}: {error}")));
            }
            // An asynchronous event (`{"event": ...}`): not the answer.
        }
    }

    /// The VM's run state (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String> {
        let status = self.execute("query-status", None)?;
        Ok(status["status"].as_str().unwrap_or("unknown").to_string())
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| qmp_error("read", e))?;
        if n == 0 {
            return Err(Error::InternalError(
                "QMP: QEMU closed the connection".into(),
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| Error::InternalError(format!("QMP: unreadable message {line:?}: {e}")))
    }
}

fn qmp_error(what: &str, e: std::io::Error) -> Error {
    Error::InternalError(format!("QMP {what}: {e}"))
}
