//! A small NBD server: serves one [`CowVolume`] on a unix socket to QEMU's built-in NBD
//! client (`-drive file=nbd+unix:///?socket=PATH`), so every guest read and write goes
//! through Kiln and Kiln knows which blocks changed.
//!
//! Only what QEMU needs: the fixed-newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`,
//! `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`, `NBD_OPT_ABORT`), simple replies, and the
//! commands READ, WRITE (with FUA), FLUSH, WRITE_ZEROES, TRIM (a no-op) and DISC. The
//! protocol is <https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>.

use super::cow::CowVolume;
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const NBD_MAGIC: &[u8; 8] = b"NBDMAGIC";
const OPTION_MAGIC: u64 = 0x4948_4156_454F_5054; // "IHAVEOPT"
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;
const CLIENT_NO_ZEROES: u32 = 1 << 1;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const REP_ERR_INVALID: u32 = 0x8000_0003;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TFLAG_HAS_FLAGS: u16 = 1 << 0;
const TFLAG_SEND_FLUSH: u16 = 1 << 2;
const TFLAG_SEND_FUA: u16 = 1 << 3;
const TFLAG_SEND_TRIM: u16 = 1 << 5;
const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
const TRANSMISSION_FLAGS: u16 =
    TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_FLAG_FUA: u16 = 1 << 0;

const EIO: u32 = 5;
const EINVAL: u32 = 22;

/// Largest option payload accepted during the handshake.
const MAX_OPTION_BYTES: u32 = 4096;
/// Largest read or write in one request (QEMU sends at most 32 MiB).
const MAX_REQUEST_BYTES: u32 = 32 << 20;
/// Preferred request size announced to the client.
const PREFERRED_BLOCK: u32 = 4096;

/// A volume served on a unix socket; stopped (and its socket removed) when dropped.
pub struct NbdServer {
    socket: PathBuf,
    /// The listening socket, to wake the accept loop when stopping.
    listener: UnixListener,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<UnixStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl NbdServer {
    /// Starts serving `volume` on a new unix socket at `socket`.
    pub fn start(socket: &Path, volume: Arc<Mutex<CowVolume>>) -> Result<NbdServer> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(|e| {
            Error::InternalError(format!("binding NBD socket {}: {e}", socket.display()))
        })?;
        let handle = listener
            .try_clone()
            .map_err(|e| Error::InternalError(format!("NBD socket: {e}")))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let stopping = stopping.clone();
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("nbd-accept".into())
                .spawn(move || accept_loop(listener, volume, stopping, connections))
                .map_err(|e| Error::InternalError(format!("starting the NBD server: {e}")))?
        };
        Ok(NbdServer {
            socket: socket.to_path_buf(),
            listener: handle,
            stopping,
            connections,
            accept: Some(accept),
        })
    }

    /// The socket path (for QEMU's `nbd+unix:///?socket=` URI).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting the listening socket down makes a blocked accept(2) return (Linux); the
        // socket's path may already be gone, so connecting to it cannot be relied on.
        // SAFETY: shutdown(2) on a descriptor this struct owns.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Ok(connections) = self.connections.lock() {
            for c in connections.iter() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn accept_loop(
    listener: UnixListener,
    volume: Arc<Mutex<CowVolume>>,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<UnixStream>>>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("NBD accept failed: {e}");
                continue;
            }
        };
        if let (Ok(handle), Ok(mut list)) = (stream.try_clone(), connections.lock()) {
            list.push(handle);
        }
        let volume = volume.clone();
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(stream, &volume) {
                    tracing::debug!("NBD connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot serve an NBD connection: {e}");
        }
    }
}

/// Runs the handshake, then transmission, until the client disconnects.
fn serve_connection(mut stream: UnixStream, volume: &Mutex<CowVolume>) -> std::io::Result<()> {
    let size = lock(volume)?.size();
    if handshake(&mut stream, size)? {
        transmission(&mut stream, volume)?;
    }
    Ok(())
}

fn lock(volume: &Mutex<CowVolume>) -> std::io::Result<std::sync::MutexGuard<'_, CowVolume>> {
    volume
        .lock()
        .map_err(|_| std::io::Error::other("volume lock poisoned"))
}

/// The option haggling. Returns true when the client chose the export (go to
/// transmission), false when it aborted.
fn handshake(stream: &mut UnixStream, size: u64) -> std::io::Result<bool> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(NBD_MAGIC);
    hello.extend_from_slice(&OPTION_MAGIC.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&hello)?;
    let client_flags = read_u32(stream)?;
    loop {
        if read_u64(stream)? != OPTION_MAGIC {
            return Err(protocol("bad option magic"));
        }
        let option = read_u32(stream)?;
        let len = read_u32(stream)?;
        if len > MAX_OPTION_BYTES {
            return Err(protocol("option too long"));
        }
        let mut data = vec![0u8; len as usize];
        stream.read_exact(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                let mut answer = Vec::with_capacity(134);
                answer.extend_from_slice(&size.to_be_bytes());
                answer.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                if client_flags & CLIENT_NO_ZEROES == 0 {
                    answer.extend_from_slice(&[0u8; 124]);
                }
                stream.write_all(&answer)?;
                return Ok(true);
            }
            OPT_ABORT => {
                option_reply(stream, option, REP_ACK, &[])?;
                return Ok(false);
            }
            OPT_LIST => {
                // One export, with the empty name.
                option_reply(stream, option, REP_SERVER, &0u32.to_be_bytes())?;
                option_reply(stream, option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let Some(wants_block_size) = parse_info_request(&data) else {
                    option_reply(stream, option, REP_ERR_INVALID, &[])?;
                    continue;
                };
                let mut export = Vec::with_capacity(12);
                export.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                export.extend_from_slice(&size.to_be_bytes());
                export.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                option_reply(stream, option, REP_INFO, &export)?;
                if wants_block_size {
                    let mut sizes = Vec::with_capacity(14);
                    sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                    sizes.extend_from_slice(&1u32.to_be_bytes());
                    sizes.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                    sizes.extend_from_slice(&MAX_REQUEST_BYTES.to_be_bytes());
                    option_reply(stream, option, REP_INFO, &sizes)?;
                }
                option_reply(stream, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    return Ok(true);
                }
            }
            _ => option_reply(stream, option, REP_ERR_UNSUP, &[])?,
        }
    }
}

/// Parses the body of NBD_OPT_INFO / NBD_OPT_GO: name length, name, information requests.
/// Returns whether the block-size information was requested, or `None` when malformed.
fn parse_info_request(data: &[u8]) -> Option<bool> {
    let name_len = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let rest = data.get(4 + name_len..)?;
    let count = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
    let requests = rest.get(2..2 + 2 * count)?;
    if requests.len() != rest.len() - 2 {
        return None;
    }
    Some(
        requests
            .chunks_exact(2)
            .any(|r| u16::from_be_bytes([r[0], r[1]]) == INFO_BLOCK_SIZE),
    )
}

fn option_reply(
    stream: &mut UnixStream,
    option: u32,
    kind: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut reply = Vec::with_capacity(20 + data.len());
    reply.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    reply.extend_from_slice(&option.to_be_bytes());
    reply.extend_from_slice(&kind.to_be_bytes());
    reply.extend_from_slice(&(data.len() as u32).to_be_bytes());
    reply.extend_from_slice(data);
    stream.write_all(&reply)
}

/// Serves requests until the client disconnects.
fn transmission(stream: &mut UnixStream, volume: &Mutex<CowVolume>) -> std::io::Result<()> {
    let mut header = [0u8; 28];
    loop {
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let magic = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes"));
        if magic != REQUEST_MAGIC {
            return Err(protocol("bad request magic"));
        }
        let flags = u16::from_be_bytes([header[4], header[5]]);
        let command = u16::from_be_bytes([header[6], header[7]]);
        let cookie = &header[8..16];
        let offset = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        let length = u32::from_be_bytes(header[24..28].try_into().expect("4 bytes"));
        if length > MAX_REQUEST_BYTES && matches!(command, CMD_READ | CMD_WRITE) {
            return Err(protocol("request too large"));
        }
        let fua = flags & CMD_FLAG_FUA != 0;
        match command {
            CMD_READ => {
                let mut data = vec![0u8; length as usize];
                match lock(volume)?.read_at(offset, &mut data) {
                    Ok(()) => simple_reply(stream, cookie, 0, &data)?,
                    Err(e) => simple_reply(stream, cookie, errno(&e), &[])?,
                }
            }
            CMD_WRITE => {
                // The payload is read whole first, so a failed write never desynchronizes
                // the stream.
                let mut data = vec![0u8; length as usize];
                stream.read_exact(&mut data)?;
                let outcome = {
                    let mut v = lock(volume)?;
                    v.write_at(offset, &data)
                        .and_then(|_| if fua { v.flush() } else { Ok(()) })
                };
                simple_reply(stream, cookie, outcome_errno(&outcome), &[])?;
            }
            CMD_WRITE_ZEROES => {
                let outcome = {
                    let mut v = lock(volume)?;
                    write_zeroes(&mut v, offset, length).and_then(|_| {
                        if fua {
                            v.flush()
                        } else {
                            Ok(())
                        }
                    })
                };
                simple_reply(stream, cookie, outcome_errno(&outcome), &[])?;
            }
            CMD_FLUSH => {
                let outcome = lock(volume)?.flush();
                simple_reply(stream, cookie, outcome_errno(&outcome), &[])?;
            }
            // Trimming is advisory: the blocks keep their bytes.
            CMD_TRIM => simple_reply(stream, cookie, 0, &[])?,
            CMD_DISC => return Ok(()),
            _ => simple_reply(stream, cookie, EINVAL, &[])?,
        }
    }
}

fn write_zeroes(volume: &mut CowVolume, offset: u64, length: u32) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(length as usize)];
    let mut done = 0u64;
    while done < length as u64 {
        let n = (length as u64 - done).min(CHUNK as u64) as usize;
        volume.write_at(offset + done, &zeros[..n])?;
        done += n as u64;
    }
    Ok(())
}

fn simple_reply(
    stream: &mut UnixStream,
    cookie: &[u8],
    error: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut reply = Vec::with_capacity(16 + data.len());
    reply.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    reply.extend_from_slice(&error.to_be_bytes());
    reply.extend_from_slice(cookie);
    reply.extend_from_slice(data);
    stream.write_all(&reply)
}

fn errno(e: &Error) -> u32 {
    match e {
        Error::InvalidParameterValue(_) => EINVAL,
        _ => EIO,
    }
}

fn outcome_errno(outcome: &Result<()>) -> u32 {
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            tracing::warn!("volume I/O failed: {e}");
            errno(e)
        }
    }
}

fn read_u32(stream: &mut UnixStream) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    stream.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(stream: &mut UnixStream) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    stream.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn protocol(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("NBD protocol: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_info_request_with_block_size_request_returns_true() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(parse_info_request(&d), Some(true));
    }

    #[test]
    fn parse_info_request_truncated_returns_none() {
        let mut d = Vec::new();
        d.extend_from_slice(&10u32.to_be_bytes());
        d.extend_from_slice(b"vol");
        assert_eq!(parse_info_request(&d), None);
        assert_eq!(parse_info_request(&[]), None);
    }
}
