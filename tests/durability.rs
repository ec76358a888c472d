//! `kill -9` in the middle of a write stream: every acknowledged write survives, nothing
//! half-written is visible after restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const WRITERS: usize = 4;
/// Upper bound of iterations per writer (each: snapshot, register, tag).
const MAX_ITERATIONS: usize = 150;
/// Acknowledged writes (all threads) after which the server is killed.
const KILL_AFTER_ACKS: usize = 900;
/// Kill anyway after this long, whatever the count.
const KILL_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Acks {
    /// snapshot id (StartSnapshot + CompleteSnapshot both acknowledged)
    snapshots: Vec<String>,
    /// image id → name
    images: HashMap<String, String>,
    /// (image id, key, value) from acknowledged CreateTags
    tags: Vec<(String, String, String)>,
    /// HTTP answers that were neither success nor a transport failure
    unexpected: Vec<String>,
}

/// The tags every image gets through TagSpecifications at registration.
fn spec_tags(thread: usize, seq: usize) -> Vec<(String, String)> {
    vec![
        ("role".to_string(), "durability".to_string()),
        ("writer".to_string(), thread.to_string()),
        ("seq".to_string(), seq.to_string()),
    ]
}

fn writer(
    c: Client,
    thread: usize,
    acks: Arc<Mutex<Acks>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    for seq in 0..MAX_ITERATIONS {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // 1. a completed snapshot
        let snap = match c.try_create_completed_snapshot() {
            Ok(s) => s,
            Err(e) if e.contains("transport") => return,
            Err(e) => {
                acks.lock().unwrap().unexpected.push(e);
                return;
            }
        };
        acks.lock().unwrap().snapshots.push(snap.clone());
        count.fetch_add(1, Ordering::SeqCst);

        // 2. an image on it, with tags at creation
        let name = format!("dur-{thread}-{seq}");
        let tags = spec_tags(thread, seq);
        let tag_refs: Vec<(&str, &str)> =
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let image = match c.try_ec2("RegisterImage", &register_params(&name, &snap, &tag_refs)) {
            Err(_) => return,
            Ok((200, body)) => match xml_value(&body, "imageId") {
                Some(id) => id,
                None => {
                    acks.lock()
                        .unwrap()
                        .unexpected
                        .push(format!("RegisterImage 200 without imageId: {body}"));
                    return;
                }
            },
            Ok((status, body)) => {
                acks.lock()
                    .unwrap()
                    .unexpected
                    .push(format!("RegisterImage {name}: {status} {body}"));
                return;
            }
        };
        acks.lock().unwrap().images.insert(image.clone(), name);
        count.fetch_add(1, Ordering::SeqCst);

        // 3. two more tags in one CreateTags call
        let v = format!("v{seq}");
        match c.try_ec2(
            "CreateTags",
            &tag_params(&image, &[("extra-a", &v), ("extra-b", &v)]),
        ) {
            Err(_) => return,
            Ok((200, _)) => {
                let mut a = acks.lock().unwrap();
                a.tags.push((image.clone(), "extra-a".into(), v.clone()));
                a.tags.push((image.clone(), "extra-b".into(), v.clone()));
                drop(a);
                count.fetch_add(1, Ordering::SeqCst);
            }
            Ok((status, body)) => {
                acks.lock()
                    .unwrap()
                    .unexpected
                    .push(format!("CreateTags {image}: {status} {body}"));
                return;
            }
        }
    }
}

#[test]
fn kill_during_write_stream_keeps_every_acknowledged_write() {
    // Arrange: a server and writers that record every acknowledged write.
    let mut server = KilnServer::start();
    let c = server.client("us-east-1");
    let acks = Arc::new(Mutex::new(Acks::default()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (c, acks, count, stop) = (c.clone(), acks.clone(), count.clone(), stop.clone());
            std::thread::spawn(move || writer(c, t, acks, count, stop))
        })
        .collect();

    // Act: kill -9 while the writers are still writing, then start again on the same data.
    let deadline = Instant::now() + KILL_DEADLINE;
    while count.load(Ordering::SeqCst) < KILL_AFTER_ACKS
        && Instant::now() < deadline
        && !handles.iter().all(|h| h.is_finished())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("writer thread panicked");
    }
    server.restart();
    let c = server.client("us-east-1");

    // Assert
    let acks = acks.lock().unwrap();
    assert!(
        acks.unexpected.is_empty(),
        "unexpected answers before the kill: {:#?}",
        acks.unexpected
    );
    assert!(
        !acks.images.is_empty(),
        "no image was acknowledged before the kill; the test proved nothing"
    );

    let images = assert_image_invariants(&c);
    eprintln!(
        "acknowledged before kill: {} snapshots, {} images, {} tags; images after restart: {}",
        acks.snapshots.len(),
        acks.images.len(),
        acks.tags.len(),
        images.len()
    );
    let by_id: HashMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();

    let missing: Vec<_> = acks
        .images
        .keys()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged images lost after kill -9: {missing:?}",
        missing.len()
    );
    for (id, name) in &acks.images {
        assert_eq!(
            &by_id[id.as_str()].name,
            name,
            "image {id} has the wrong name after restart"
        );
    }

    let lost_tags: Vec<_> = acks
        .tags
        .iter()
        .filter(|(id, k, v)| by_id.get(id.as_str()).and_then(|i| i.tag(k)) != Some(v.as_str()))
        .collect();
    assert!(
        lost_tags.is_empty(),
        "acknowledged tags lost after kill -9: {lost_tags:?}"
    );

    let snaps: HashMap<String, String> = c
        .own_snapshots()
        .into_iter()
        .map(|s| (s.id, s.state))
        .collect();
    let lost_snaps: Vec<_> = acks
        .snapshots
        .iter()
        .filter(|s| snaps.get(s.as_str()).map(String::as_str) != Some("completed"))
        .collect();
    assert!(
        lost_snaps.is_empty(),
        "acknowledged completed snapshots lost or not completed: {lost_snaps:?}"
    );

    // Nothing half-written: every image the writers made (acknowledged or not) carries all its
    // TagSpecifications tags, and the two tags of one CreateTags call are both there or both not.
    for img in images.iter().filter(|i| i.name.starts_with("dur-")) {
        let (thread, seq) = img.name["dur-".len()..]
            .split_once('-')
            .expect("name dur-T-S");
        let expected = spec_tags(thread.parse().unwrap(), seq.parse().unwrap());
        for (k, v) in &expected {
            assert_eq!(
                img.tag(k),
                Some(v.as_str()),
                "image {} ({}) is missing creation tag {k}: {:?}",
                img.id,
                img.name,
                img.tags
            );
        }
        assert_eq!(
            img.tag("extra-a").is_some(),
            img.tag("extra-b").is_some(),
            "image {} ({}) has half of one CreateTags call: {:?}",
            img.id,
            img.name,
            img.tags
        );
    }
}

#[test]
fn kill_after_deregister_keeps_image_gone() {
    // Arrange
    let mut server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let gone = register_image(&c, "dereg-gone", &snap, &[]);
    let kept = register_image(&c, "dereg-kept", &snap, &[]);
    c.ec2_ok("DeregisterImage", &p(&[("ImageId", &gone)]));

    // Act
    server.kill9();
    server.restart();
    let c = server.client("us-east-1");

    // Assert
    let ids: HashSet<String> = c.own_images().into_iter().map(|i| i.id).collect();
    assert!(
        !ids.contains(&gone),
        "deregistered image {gone} is back after kill -9"
    );
    assert!(
        ids.contains(&kept),
        "registered image {kept} lost after kill -9"
    );
    let explicit = c.describe_images(&p(&[("ImageId.1", &gone)]));
    assert!(
        explicit.is_empty(),
        "DescribeImages ImageId={gone} after restart: {explicit:?}"
    );
}

#[test]
fn restart_after_kill_still_rejects_duplicate_name() {
    // Arrange
    let mut server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    register_image(&c, "unique-after-restart", &snap, &[]);

    // Act
    server.kill9();
    server.restart();
    let c = server.client("us-east-1");
    let (status, body) = c.ec2_owned(
        "RegisterImage",
        &register_params("unique-after-restart", &snap, &[]),
    );

    // Assert
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        error_code(&body).as_deref(),
        Some("InvalidAMIName.Duplicate"),
        "{body}"
    );
}
