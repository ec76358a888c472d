//! Snapshot data and the block store under crashes, deletion, orphans and corruption:
//! `kill -9` during a stream of PutSnapshotBlock, restart, garbage collection after
//! DeleteSnapshot, orphan files at start-up, and `kiln scrub` against a damaged block.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const REGION: &str = "us-east-1";
/// Blocks per GiB of volume (the highest valid index of a 1 GiB volume is this minus one).
const BLOCKS_PER_GIB: i64 = 2048;
/// How long the garbage collector (every ~5 s) may take to remove a dead block.
const GC_WAIT: Duration = Duration::from_secs(15);

fn zero_block() -> Vec<u8> {
    vec![0u8; EBS_BLOCK_SIZE]
}

/// A block that is not all zeros and is unique to the run (a random block).
fn block() -> Vec<u8> {
    random_block()
}

fn exists(path: &std::path::Path) -> bool {
    path.is_file()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns whether it held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 during a stream of PutSnapshotBlock
// ---------------------------------------------------------------------------------------------

const PUT_WRITERS: usize = 4;
/// Blocks each writer puts at most (bounds the run if the kill comes late).
const PUT_MAX_PER_WRITER: usize = 40;
/// Acknowledged blocks (all writers) after which the server is killed.
const PUT_KILL_AFTER_ACKS: usize = 24;
const PUT_KILL_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct PutLog {
    /// Every block a writer started to send (index → bytes), acknowledged or not.
    attempted: BTreeMap<i64, Vec<u8>>,
    /// Indexes whose PutSnapshotBlock answered 201.
    acknowledged: Vec<i64>,
    /// Writers that stopped on a transport error (their last block was in flight).
    interrupted: usize,
    /// Answers that were neither 201 nor a transport failure.
    unexpected: Vec<String>,
}

/// Waits until `progress` reaches `target` (or `deadline` passes, or every writer ended),
/// kills the server with SIGKILL, stops and joins the writers, and starts the server again
/// on the same data directory.
fn kill_mid_stream(
    server: &mut KilnServer,
    handles: Vec<std::thread::JoinHandle<()>>,
    progress: &AtomicUsize,
    target: usize,
    deadline: Duration,
    stop: &AtomicBool,
) {
    let deadline = Instant::now() + deadline;
    while progress.load(Ordering::SeqCst) < target
        && Instant::now() < deadline
        && !handles.iter().all(|h| h.is_finished())
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("writer thread panicked");
    }
    server.restart();
}

fn put_writer(
    c: Client,
    snapshot: String,
    writer: usize,
    log: Arc<Mutex<PutLog>>,
    acks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    for k in 0..PUT_MAX_PER_WRITER {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let index = (writer + k * PUT_WRITERS) as i64;
        let data = block();
        log.lock().unwrap().attempted.insert(index, data.clone());
        match c.try_put_block(&snapshot, index, &data) {
            Err(_) => {
                log.lock().unwrap().interrupted += 1;
                return;
            }
            Ok(r) if r.status == 201 => {
                log.lock().unwrap().acknowledged.push(index);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                log.lock().unwrap().unexpected.push(format!(
                    "PutSnapshotBlock {index}: {} {}",
                    r.status,
                    r.text_excerpt()
                ));
                return;
            }
        }
    }
}

#[test]
fn kill_during_put_block_stream_keeps_acknowledged_blocks() {
    // Arrange: a pending snapshot and writers streaming random blocks into it.
    let mut server = KilnServer::start();
    let c = server.client(REGION);
    let snap = c.start_snapshot(1);
    let log = Arc::new(Mutex::new(PutLog::default()));
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..PUT_WRITERS)
        .map(|w| {
            let (c, snap, log, acks, stop) = (
                c.clone(),
                snap.clone(),
                log.clone(),
                acks.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || put_writer(c, snap, w, log, acks, stop))
        })
        .collect();

    // Act: kill -9 mid-stream, then start again on the same data directory.
    kill_mid_stream(
        &mut server,
        handles,
        &acks,
        PUT_KILL_AFTER_ACKS,
        PUT_KILL_DEADLINE,
        &stop,
    );
    let c = server.client(REGION);

    let log = log.lock().unwrap();
    assert!(
        log.unexpected.is_empty(),
        "unexpected answers before the kill: {:#?}",
        log.unexpected
    );
    assert!(
        !log.acknowledged.is_empty(),
        "no block was acknowledged before the kill; the test proved nothing"
    );
    let unacknowledged: Vec<i64> = log
        .attempted
        .keys()
        .filter(|i| !log.acknowledged.contains(i))
        .copied()
        .collect();
    eprintln!(
        "before the kill: {} blocks acknowledged, {} sent without answer, {} writers interrupted",
        log.acknowledged.len(),
        unacknowledged.len(),
        log.interrupted
    );

    // Assert (on disk, right after restart and its start-up GC): every acknowledged block's
    // file is there, whole.
    for i in &log.acknowledged {
        let data = &log.attempted[i];
        let path = block_file(server.data_dir(), data);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == *data,
            "acknowledged block {i} ({}) is missing or not whole on disk after kill -9 and restart",
            path.display()
        );
    }
    assert_eq!(
        c.snapshot_state(&snap).as_deref(),
        Some("pending"),
        "the snapshot being written at kill time is no longer pending"
    );

    // The blocks in flight at the kill may or may not have been stored: put them again (same
    // bytes), as a client that never heard an answer would, then complete with the count and
    // LINEAR checksum of every block. A lost acknowledged block makes the count or the checksum
    // disagree and the snapshot end in `error`.
    for i in &unacknowledged {
        c.put_block(&snap, *i, &log.attempted[i]);
    }
    let sum = linear_checksum_b64(log.attempted.values().map(|b| b.as_slice()));
    let r = c
        .try_complete_snapshot(&snap, log.attempted.len(), Some(&sum))
        .expect("CompleteSnapshot transport");
    assert_eq!(r.status, 202, "CompleteSnapshot: {}", r.text_excerpt());
    assert_eq!(
        r.json()["Status"],
        "completed",
        "CompleteSnapshot with ChangedBlocksCount={} and the LINEAR checksum of every block \
         sent did not complete: {}; snapshot state: {:?}",
        log.attempted.len(),
        r.text(),
        c.snapshot_state(&snap)
    );
    assert_eq!(c.snapshot_state(&snap).as_deref(), Some("completed"));
    c.assert_snapshot_reads_back(&snap, &log.attempted);
    server.assert_scrub_clean();
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 while snapshots are being written and completed
// ---------------------------------------------------------------------------------------------

const SNAP_WRITERS: usize = 3;
/// Snapshots each writer makes at most.
const SNAP_MAX_PER_WRITER: usize = 12;
/// Non-zero blocks per snapshot (each snapshot also gets one all-zero block).
const SNAP_BLOCKS: usize = 3;
/// Acknowledged completions (all writers) after which the server is killed.
const SNAP_KILL_AFTER_COMPLETIONS: usize = 6;
const SNAP_KILL_DEADLINE: Duration = Duration::from_secs(40);

/// One snapshot a writer started.
struct Written {
    id: String,
    /// index → bytes of every block whose PutSnapshotBlock was acknowledged.
    blocks: BTreeMap<i64, Vec<u8>>,
    /// All SNAP_BLOCKS + 1 blocks were acknowledged.
    all_put: bool,
    /// CompleteSnapshot was sent (its answer may have been lost).
    completion_sent: bool,
    /// CompleteSnapshot answered 202 `completed`.
    completion_acknowledged: bool,
}

fn snapshot_writer(
    c: Client,
    writer: usize,
    out: Arc<Mutex<Vec<Written>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
    completions: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    for seq in 0..SNAP_MAX_PER_WRITER {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let id = match c.try_start_snapshot_json(&serde_json::json!({ "VolumeSize": 1 })) {
            Err(_) => return,
            Ok(r) if r.status == 201 => match r.json()["SnapshotId"].as_str() {
                Some(id) => id.to_string(),
                None => {
                    unexpected
                        .lock()
                        .unwrap()
                        .push(format!("StartSnapshot 201 without id: {}", r.text()));
                    return;
                }
            },
            Ok(r) => {
                unexpected.lock().unwrap().push(format!(
                    "StartSnapshot: {} {}",
                    r.status,
                    r.text_excerpt()
                ));
                return;
            }
        };
        let slot = {
            let mut o = out.lock().unwrap();
            o.push(Written {
                id: id.clone(),
                blocks: BTreeMap::new(),
                all_put: false,
                completion_sent: false,
                completion_acknowledged: false,
            });
            o.len() - 1
        };
        // Distinct indexes spread over the volume; the last one gets an all-zero block.
        let base = ((writer * SNAP_MAX_PER_WRITER + seq) * 7) as i64 % (BLOCKS_PER_GIB - 16);
        let mut plan: Vec<(i64, Vec<u8>)> = (0..SNAP_BLOCKS)
            .map(|k| (base + 3 * k as i64, block()))
            .collect();
        plan.push((base + 3 * SNAP_BLOCKS as i64, zero_block()));
        for (index, data) in plan {
            match c.try_put_block(&id, index, &data) {
                Err(_) => return,
                Ok(r) if r.status == 201 => {
                    out.lock().unwrap()[slot].blocks.insert(index, data);
                }
                Ok(r) => {
                    unexpected.lock().unwrap().push(format!(
                        "PutSnapshotBlock {id}/{index}: {} {}",
                        r.status,
                        r.text_excerpt()
                    ));
                    return;
                }
            }
        }
        let sum = {
            let mut o = out.lock().unwrap();
            o[slot].all_put = true;
            o[slot].completion_sent = true;
            linear_checksum_b64(o[slot].blocks.values().map(|b| b.as_slice()))
        };
        match c.try_complete_snapshot(&id, SNAP_BLOCKS + 1, Some(&sum)) {
            Err(_) => return,
            Ok(r) if r.status == 202 && r.json()["Status"] == "completed" => {
                out.lock().unwrap()[slot].completion_acknowledged = true;
                completions.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                unexpected.lock().unwrap().push(format!(
                    "CompleteSnapshot {id}: {} {}",
                    r.status,
                    r.text_excerpt()
                ));
                return;
            }
        }
    }
}

#[test]
fn kill_then_restart_no_completed_snapshot_is_partial() {
    // Arrange: one snapshot deliberately left pending with some blocks, then writers that
    // start, fill and complete snapshots until the kill.
    let mut server = KilnServer::start();
    let c = server.client(REGION);
    let held = c.start_snapshot(1);
    let held_blocks: BTreeMap<i64, Vec<u8>> = [(5, block()), (6, zero_block()), (900, block())]
        .into_iter()
        .collect();
    for (i, d) in &held_blocks {
        c.put_block(&held, *i, d);
    }

    let written = Arc::new(Mutex::new(Vec::new()));
    let unexpected = Arc::new(Mutex::new(Vec::new()));
    let completions = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..SNAP_WRITERS)
        .map(|w| {
            let (c, written, unexpected, completions, stop) = (
                c.clone(),
                written.clone(),
                unexpected.clone(),
                completions.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                snapshot_writer(c, w, written, unexpected, completions, stop)
            })
        })
        .collect();

    // Act
    kill_mid_stream(
        &mut server,
        handles,
        &completions,
        SNAP_KILL_AFTER_COMPLETIONS,
        SNAP_KILL_DEADLINE,
        &stop,
    );
    let c = server.client(REGION);

    // Assert
    let unexpected = unexpected.lock().unwrap();
    assert!(
        unexpected.is_empty(),
        "unexpected answers before the kill: {unexpected:#?}"
    );
    let written = written.lock().unwrap();
    let acknowledged = written.iter().filter(|w| w.completion_acknowledged).count();
    assert!(
        acknowledged > 0,
        "no completion was acknowledged before the kill; the test proved nothing"
    );
    let states: HashMap<String, String> = c
        .own_snapshots()
        .into_iter()
        .map(|s| (s.id, s.state))
        .collect();
    eprintln!(
        "before the kill: {} snapshots started, {acknowledged} completions acknowledged; \
         states after restart: {:?}",
        written.len(),
        written
            .iter()
            .map(|w| states.get(&w.id).map(String::as_str).unwrap_or("MISSING"))
            .collect::<Vec<_>>()
    );

    for w in written.iter() {
        let state = states.get(&w.id).map(String::as_str);
        if w.completion_acknowledged {
            assert_eq!(
                state,
                Some("completed"),
                "snapshot {} was acknowledged completed before the kill",
                w.id
            );
        } else if !w.completion_sent {
            assert_eq!(
                state,
                Some("pending"),
                "snapshot {} was never completed (blocks acknowledged: {}), yet after restart it is",
                w.id,
                w.blocks.len()
            );
        } else {
            // Completion in flight at the kill: either outcome, but never a partial snapshot.
            assert!(
                matches!(state, Some("pending") | Some("completed")),
                "snapshot {} whose completion was in flight is {state:?} after restart",
                w.id
            );
        }
        if state == Some("completed") {
            assert!(
                w.all_put,
                "snapshot {} is completed but not all its blocks were acknowledged",
                w.id
            );
            c.assert_snapshot_reads_back(&w.id, &w.blocks);
        }
    }

    // The held snapshot is still pending: not completed, not readable …
    assert_eq!(
        states.get(&held).map(String::as_str),
        Some("pending"),
        "snapshot {held}, pending at kill time, changed state"
    );
    let r = c
        .try_list_blocks_page(&held, None)
        .expect("ListSnapshotBlocks transport");
    assert_eq!(
        r.status,
        400,
        "ListSnapshotBlocks of pending {held} should be refused: {}",
        r.text_excerpt()
    );
    // … and it kept every acknowledged block: completing it now with the same count and
    // checksum succeeds and it reads back whole.
    let sum = linear_checksum_b64(held_blocks.values().map(|b| b.as_slice()));
    assert_eq!(
        c.complete_snapshot(&held, held_blocks.len(), Some(&sum)),
        "completed",
        "completing {held} after restart"
    );
    c.assert_snapshot_reads_back(&held, &held_blocks);
    server.assert_scrub_clean();
}

// ---------------------------------------------------------------------------------------------
// 3. DeleteSnapshot, then garbage collection
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_snapshot_then_gc_removes_its_unique_blocks_only() {
    // Arrange: A and B share two blocks (at different indexes in B); each has its own too.
    let server = KilnServer::start();
    let c = server.client(REGION);
    let (s1, s2, u1, u2, v1) = (block(), block(), block(), block(), block());
    let a_blocks: BTreeMap<i64, Vec<u8>> = [
        (0, s1.clone()),
        (1, s2.clone()),
        (2, u1.clone()),
        (3, u2.clone()),
        (4, zero_block()),
    ]
    .into_iter()
    .collect();
    let b_blocks: BTreeMap<i64, Vec<u8>> = [(0, s1.clone()), (1, v1.clone()), (7, s2.clone())]
        .into_iter()
        .collect();
    let a = c.start_snapshot(1);
    c.put_blocks_and_complete(&a, &a_blocks);
    let b = c.start_snapshot(1);
    c.put_blocks_and_complete(&b, &b_blocks);
    let dir = server.data_dir();
    for (name, d) in [
        ("s1", &s1),
        ("s2", &s2),
        ("u1", &u1),
        ("u2", &u2),
        ("v1", &v1),
    ] {
        assert!(
            exists(&block_file(dir, d)),
            "block {name} has no file after its snapshot completed"
        );
    }

    // Act
    c.ec2_ok("DeleteSnapshot", &p(&[("SnapshotId", &a)]));

    // Assert: A's unique blocks go within a GC period or two …
    let unique = [block_file(dir, &u1), block_file(dir, &u2)];
    let gone = wait_for(GC_WAIT, || unique.iter().all(|f| !exists(f)));
    assert!(
        gone,
        "within {GC_WAIT:?} of DeleteSnapshot {a}, its unique blocks were not collected: {:?}",
        unique
            .iter()
            .filter(|f| exists(f))
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
    );
    // … and, one more collection later, the shared blocks and B's own are still there.
    std::thread::sleep(Duration::from_secs(6));
    for (name, d) in [("s1", &s1), ("s2", &s2), ("v1", &v1)] {
        assert!(
            exists(&block_file(dir, d)),
            "block {name}, still used by {b}, was deleted after DeleteSnapshot {a}"
        );
    }
    assert!(
        !c.own_snapshot_ids().contains(&a),
        "deleted snapshot {a} is still listed"
    );
    assert_eq!(c.snapshot_state(&b).as_deref(), Some("completed"));
    c.assert_snapshot_reads_back(&b, &b_blocks);
    server.assert_scrub_clean();
}

// ---------------------------------------------------------------------------------------------
// 4. Orphan block files at start-up
// ---------------------------------------------------------------------------------------------

#[test]
fn orphan_block_file_is_removed_at_restart() {
    // Arrange: a completed snapshot, a pending one with an acknowledged block, and files no
    // record knows: a block named by its own hash (as a crash between write and record leaves
    // it), one whose name is a valid hash of other bytes, and a leftover temporary file.
    let mut server = KilnServer::start();
    let c = server.client(REGION);
    let done_blocks: BTreeMap<i64, Vec<u8>> = [(0, block()), (10, block())].into_iter().collect();
    let done = c.start_snapshot(1);
    c.put_blocks_and_complete(&done, &done_blocks);
    let pending_blocks: BTreeMap<i64, Vec<u8>> = [(3, block())].into_iter().collect();
    let pending = c.start_snapshot(1);
    c.put_block(&pending, 3, &pending_blocks[&3]);

    let dir = server.data_dir().to_path_buf();
    let orphan_data = block();
    let orphan = block_file(&dir, &orphan_data);
    let random_name = sha256_hex(&block());
    let misnamed = block_file_for_hash(&dir, &random_name);
    let leftover = dir.join("blocks").join("tmp").join("0011223344556677-1-0");
    for (path, data) in [
        (&orphan, orphan_data.clone()),
        (&misnamed, block()),
        (&leftover, block()),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    // Act: restart (kill -9, then start again on the same data directory).
    server.restart();
    let c = server.client(REGION);

    // Assert: the start-up collection removed them before the server accepted connections.
    for (what, path) in [
        ("orphan block named by its hash", &orphan),
        ("orphan file with a valid hash name", &misnamed),
        ("leftover temporary file", &leftover),
    ] {
        assert!(
            !exists(path),
            "{what} {} is still there after restart",
            path.display()
        );
    }
    for (what, d) in done_blocks
        .values()
        .map(|d| ("completed snapshot's", d))
        .chain(pending_blocks.values().map(|d| ("pending snapshot's", d)))
    {
        assert!(
            exists(&block_file(&dir, d)),
            "{what} block {} was removed at restart",
            sha256_hex(d)
        );
    }
    c.assert_snapshot_reads_back(&done, &done_blocks);
    let sum = linear_checksum_b64(pending_blocks.values().map(|b| b.as_slice()));
    assert_eq!(
        c.complete_snapshot(&pending, pending_blocks.len(), Some(&sum)),
        "completed"
    );
    c.assert_snapshot_reads_back(&pending, &pending_blocks);
    server.assert_scrub_clean();
}

// ---------------------------------------------------------------------------------------------
// 5. A corrupted block: scrub reports it, GetSnapshotBlock refuses it
// ---------------------------------------------------------------------------------------------

#[test]
fn scrub_corrupted_block_reports_damage_and_get_fails() {
    // Arrange: `bad` is in S1 and S2; S3 does not contain it.
    let server = KilnServer::start();
    let c = server.client(REGION);
    let (bad, good, other) = (block(), block(), block());
    let s1_blocks: BTreeMap<i64, Vec<u8>> =
        [(0, bad.clone()), (1, good.clone())].into_iter().collect();
    let s2_blocks: BTreeMap<i64, Vec<u8>> = [(4, bad.clone())].into_iter().collect();
    let s3_blocks: BTreeMap<i64, Vec<u8>> = [(0, good.clone()), (2, other.clone())]
        .into_iter()
        .collect();
    let s1 = c.start_snapshot(1);
    c.put_blocks_and_complete(&s1, &s1_blocks);
    let s2 = c.start_snapshot(1);
    c.put_blocks_and_complete(&s2, &s2_blocks);
    let s3 = c.start_snapshot(1);
    c.put_blocks_and_complete(&s3, &s3_blocks);
    server.assert_scrub_clean();
    // Tokens listed before the damage (a reader in the middle of a download).
    let s1_tokens: HashMap<i64, String> = c.list_blocks(&s1).into_iter().collect();

    // Act: flip one byte of the shared block's file.
    let bad_hash = sha256_hex(&bad);
    let path = block_file(server.data_dir(), &bad);
    let mut bytes = std::fs::read(&path).expect("read the block file");
    bytes[12_345] ^= 0x01;
    std::fs::write(&path, &bytes).expect("rewrite the block file");
    let out = server.scrub();

    // Assert: scrub fails and names the block and both snapshots holding it, and nothing else.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "kiln scrub exited 0 with a damaged block\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stdout.contains("store is clean"),
        "kiln scrub says clean with a damaged block: {stdout}"
    );
    let damaged: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DAMAGED block "))
        .collect();
    assert_eq!(
        damaged.len(),
        1,
        "expected exactly one DAMAGED line\nstdout: {stdout}\nstderr: {stderr}"
    );
    let line = damaged[0];
    assert!(
        line.starts_with(&format!("DAMAGED block {bad_hash} in snapshots: ")),
        "DAMAGED line does not name block {bad_hash}: {line}"
    );
    for s in [&s1, &s2] {
        assert!(
            line.contains(s.as_str()),
            "DAMAGED line does not name {s}: {line}"
        );
    }
    assert!(
        !line.contains(s3.as_str()),
        "DAMAGED line names {s3}, which does not hold the block: {line}"
    );

    // GetSnapshotBlock of the damaged block is a server error, never the wrong bytes …
    for (snap, index, token) in [
        (&s1, 0, s1_tokens[&0].clone()),
        (&s2, 4, c.list_blocks(&s2)[0].1.clone()),
    ] {
        let r = c
            .try_get_block(snap, index, &token)
            .expect("GetSnapshotBlock transport");
        assert!(
            r.body != bytes && r.body != bad,
            "GetSnapshotBlock {snap}/{index} returned block data for a damaged block (status {})",
            r.status
        );
        assert_eq!(
            r.status,
            500,
            "GetSnapshotBlock {snap}/{index} of a damaged block: {}",
            r.text_excerpt()
        );
        assert_eq!(
            r.error_type().as_deref(),
            Some("InternalServerException"),
            "GetSnapshotBlock {snap}/{index}: {}",
            r.text_excerpt()
        );
    }
    // … while the intact blocks still read back.
    assert!(
        c.get_block(&s1, 1, &s1_tokens[&1]) == good,
        "intact block of {s1} changed"
    );
    c.assert_snapshot_reads_back(&s3, &s3_blocks);
}

// ---------------------------------------------------------------------------------------------
// 6. A pending snapshot past its Timeout: `error`, and its blocks are released
// ---------------------------------------------------------------------------------------------

/// The minimum Timeout is 10 minutes, too long for a test: the server is stopped and the
/// snapshot's recorded deadline (`expires_at_ms` in its `snapshots.doc` row) moved into the
/// past, so the background work expires it right after restart.
#[test]
fn pending_snapshot_past_timeout_goes_to_error_and_gc_removes_its_blocks() {
    // Arrange
    let mut server = KilnServer::start();
    let c = server.client(REGION);
    let snap = {
        let r = c
            .try_start_snapshot_json(&serde_json::json!({ "VolumeSize": 1, "Timeout": 10 }))
            .expect("StartSnapshot transport");
        assert_eq!(r.status, 201, "StartSnapshot: {}", r.text_excerpt());
        r.json()["SnapshotId"].as_str().unwrap().to_string()
    };
    let (x, y) = (block(), block());
    c.put_block(&snap, 0, &x);
    c.put_block(&snap, 1, &y);
    server.kill9();
    {
        let db = rusqlite::Connection::open(server.data_dir().join("kiln.db")).expect("open db");
        let deadline: Option<i64> = db
            .query_row(
                "SELECT json_extract(doc, '$.expires_at_ms') FROM snapshots WHERE snapshot_id = ?1",
                [&snap],
                |r| r.get(0),
            )
            .expect("read the snapshot row");
        assert!(
            deadline.is_some(),
            "snapshot {snap} has no expires_at_ms recorded"
        );
        let changed = db
            .execute(
                "UPDATE snapshots SET doc = json_set(doc, '$.expires_at_ms', 1000) WHERE snapshot_id = ?1",
                [&snap],
            )
            .expect("move the deadline");
        assert_eq!(changed, 1);
    }

    // Act
    server.restart();
    let c = server.client(REGION);

    // Assert
    let errored = wait_for(Duration::from_secs(5), || {
        c.snapshot_state(&snap).as_deref() == Some("error")
    });
    assert!(
        errored,
        "snapshot {snap} past its timeout is {:?}, not error",
        c.snapshot_state(&snap)
    );
    let files = [
        block_file(server.data_dir(), &x),
        block_file(server.data_dir(), &y),
    ];
    let released = wait_for(GC_WAIT, || files.iter().all(|f| !exists(f)));
    assert!(
        released,
        "within {GC_WAIT:?} of {snap} going to error, its blocks were not collected: {:?}",
        files
            .iter()
            .filter(|f| exists(f))
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
    );
    let r = c
        .try_put_block(&snap, 2, &block())
        .expect("PutSnapshotBlock transport");
    assert_eq!(
        r.status,
        400,
        "PutSnapshotBlock to expired {snap}: {}",
        r.text_excerpt()
    );
    server.assert_scrub_clean();
}
