//! 50 concurrent clients doing mixed calls for a bounded time: only the errors that the races
//! explain, never a 5xx, and the invariants hold afterwards.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::*;

const CLIENTS: usize = 50;
const RUN_FOR: Duration = Duration::from_secs(10);
/// Upper bound of calls per client, so a very fast server still ends.
const MAX_CALLS_PER_CLIENT: usize = 5_000;
const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
/// Names that several clients race to register.
const SHARED_NAMES: usize = 8;
/// Errors an image-id call may get when another client deregistered the image first.
const GONE: [&str; 2] = ["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"];

/// What one (account, region) pair saw acknowledged.
#[derive(Default)]
struct Ledger {
    /// images whose RegisterImage answered 200
    registered: HashSet<String>,
    /// images whose DeregisterImage answered 200
    deregistered: HashSet<String>,
    /// images somebody sent DeregisterImage for (before the answer)
    deregister_sent: HashSet<String>,
    /// candidates for the image-id calls
    live: Vec<String>,
}

struct Scope {
    client: Client,
    snapshots: Vec<String>,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Outcome {
    /// (op, "200" or error code) → count
    counts: BTreeMap<(String, String), usize>,
    unexpected: Vec<String>,
}

fn record(
    out: &Mutex<Outcome>,
    op: &str,
    status: u16,
    body: &str,
    expected_errors: &[&str],
) -> bool {
    let code = if status == 200 {
        "200".to_string()
    } else {
        error_code(body).unwrap_or_else(|| format!("HTTP {status}"))
    };
    let mut o = out.lock().unwrap();
    *o.counts.entry((op.to_string(), code.clone())).or_default() += 1;
    let ok = status == 200 || (status < 500 && expected_errors.contains(&code.as_str()));
    if !ok {
        o.unexpected.push(format!("{op}: HTTP {status} {body}"));
    }
    status == 200
}

/// Picks a random known image of this scope, if any.
fn pick(scope: &Scope, rng: &mut StdRng) -> Option<String> {
    let l = scope.ledger.lock().unwrap();
    if l.live.is_empty() {
        None
    } else {
        Some(l.live[rng.gen_range(0..l.live.len())].clone())
    }
}

/// Errors allowed for a call on `image`: GONE only if somebody tried to deregister it.
fn gone_allowed(scope: &Scope, image: &str) -> &'static [&'static str] {
    if scope.ledger.lock().unwrap().deregister_sent.contains(image) {
        &GONE
    } else {
        &[]
    }
}

fn client_loop(
    id: usize,
    scopes: Arc<Vec<Scope>>,
    out: Arc<Mutex<Outcome>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(id as u64);
    let scope = &scopes[id % scopes.len()];
    let c = &scope.client;
    for n in 0..MAX_CALLS_PER_CLIENT {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let roll = rng.gen_range(0..100);
        let result = match roll {
            // RegisterImage: a private name, or one of a few names several clients race for.
            0..=19 => {
                let shared = rng.gen_bool(0.3);
                let name = if shared {
                    format!("shared-{}", rng.gen_range(0..SHARED_NAMES))
                } else {
                    format!("c-{id}-{n}")
                };
                let snap = &scope.snapshots[rng.gen_range(0..scope.snapshots.len())];
                let thread_tag = id.to_string();
                let params =
                    register_params(&name, snap, &[("client", &thread_tag), ("kind", "conc")]);
                c.try_ec2("RegisterImage", &params).map(|(s, body)| {
                    let expected: &[&str] = if shared {
                        &["InvalidAMIName.Duplicate"]
                    } else {
                        &[]
                    };
                    if record(&out, "RegisterImage", s, &body, expected) {
                        let image = xml_value(&body, "imageId").unwrap_or_default();
                        let mut l = scope.ledger.lock().unwrap();
                        l.registered.insert(image.clone());
                        l.live.push(image);
                    }
                })
            }
            // DescribeImages with filters.
            20..=39 => {
                let params = match rng.gen_range(0..5) {
                    0 => p(&[
                        ("Owner.1", "self"),
                        ("Filter.1.Name", "name"),
                        ("Filter.1.Value.1", &format!("c-{id}-*")),
                    ]),
                    1 => p(&[
                        ("Filter.1.Name", "tag:client"),
                        ("Filter.1.Value.1", &id.to_string()),
                    ]),
                    2 => p(&[
                        ("Owner.1", "self"),
                        ("Filter.1.Name", "state"),
                        ("Filter.1.Value.1", "available"),
                        ("Filter.2.Name", "name"),
                        ("Filter.2.Value.1", "shared-?"),
                    ]),
                    3 => p(&[("Owner.1", "self"), ("MaxResults", "5")]),
                    _ => match pick(scope, &mut rng) {
                        Some(img) => p(&[("ImageId.1", &img)]),
                        None => p(&[("Owner.1", "self")]),
                    },
                };
                c.try_ec2("DescribeImages", &params).map(|(s, body)| {
                    if record(&out, "DescribeImages", s, &body, &[]) {
                        parse_xml(&body); // must be well-formed
                    }
                })
            }
            // CreateTags / DeleteTags on a known image.
            40..=54 => match pick(scope, &mut rng) {
                None => Ok(()),
                Some(img) => {
                    let val = n.to_string();
                    let (op, params) = if rng.gen_bool(0.7) {
                        (
                            "CreateTags",
                            tag_params(&img, &[("touched", &val), (&format!("k{}", n % 5), "v")]),
                        )
                    } else {
                        (
                            "DeleteTags",
                            p(&[("ResourceId.1", &img), ("Tag.1.Key", "touched")]),
                        )
                    };
                    c.try_ec2(op, &params).map(|(s, body)| {
                        record(&out, op, s, &body, gone_allowed(scope, &img));
                    })
                }
            },
            // ModifyImageAttribute description, DescribeImageAttribute description.
            55..=69 => match pick(scope, &mut rng) {
                None => Ok(()),
                Some(img) => {
                    let (op, params) = if rng.gen_bool(0.6) {
                        (
                            "ModifyImageAttribute",
                            p(&[
                                ("ImageId", &img),
                                ("Description.Value", &format!("set by {id} at {n}")),
                            ]),
                        )
                    } else {
                        (
                            "DescribeImageAttribute",
                            p(&[("ImageId", &img), ("Attribute", "description")]),
                        )
                    };
                    c.try_ec2(op, &params).map(|(s, body)| {
                        record(&out, op, s, &body, gone_allowed(scope, &img));
                    })
                }
            },
            // DeregisterImage.
            70..=84 => match pick(scope, &mut rng) {
                None => Ok(()),
                Some(img) => {
                    scope
                        .ledger
                        .lock()
                        .unwrap()
                        .deregister_sent
                        .insert(img.clone());
                    c.try_ec2("DeregisterImage", &p(&[("ImageId", &img)]))
                        .map(|(s, body)| {
                            if record(&out, "DeregisterImage", s, &body, &GONE) {
                                let mut l = scope.ledger.lock().unwrap();
                                l.deregistered.insert(img.clone());
                                l.live.retain(|x| x != &img);
                            }
                        })
                }
            },
            // DescribeTags for one image, DescribeSnapshots.
            85..=92 => {
                let params = match pick(scope, &mut rng) {
                    Some(img) => p(&[("Filter.1.Name", "resource-id"), ("Filter.1.Value.1", &img)]),
                    None => p(&[
                        ("Filter.1.Name", "resource-type"),
                        ("Filter.1.Value.1", "image"),
                    ]),
                };
                c.try_ec2("DescribeTags", &params).map(|(s, body)| {
                    record(&out, "DescribeTags", s, &body, &[]);
                })
            }
            _ => c
                .try_ec2("DescribeSnapshots", &p(&[("Owner.1", "self")]))
                .map(|(s, body)| {
                    record(&out, "DescribeSnapshots", s, &body, &[]);
                }),
        };
        if let Err(e) = result {
            out.lock()
                .unwrap()
                .unexpected
                .push(format!("client {id}: transport error: {e}"));
            return;
        }
    }
}

#[test]
fn mixed_calls_from_50_clients_give_only_expected_errors_and_keep_invariants() {
    // Arrange: two accounts × two regions, three completed snapshots in each.
    let server = KilnServer::start();
    let second = server.create_account("concurrency-b", &[]);
    let accounts = [server.creds(), second.creds];
    let scopes: Vec<Scope> = accounts
        .iter()
        .flat_map(|creds| REGIONS.iter().map(move |r| (creds.clone(), *r)))
        .map(|(creds, region)| {
            let client = server.client_with(creds, region);
            let snapshots = (0..3).map(|_| client.create_completed_snapshot()).collect();
            Scope {
                client,
                snapshots,
                ledger: Mutex::new(Ledger::default()),
            }
        })
        .collect();
    let scopes = Arc::new(scopes);
    let out = Arc::new(Mutex::new(Outcome::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // Act
    let handles: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (scopes, out, stop) = (scopes.clone(), out.clone(), stop.clone());
            std::thread::spawn(move || client_loop(id, scopes, out, stop))
        })
        .collect();
    std::thread::sleep(RUN_FOR); // bounds the run; nothing is asserted about speed
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("client thread panicked");
    }

    // Assert
    let out = out.lock().unwrap();
    eprintln!("calls by (action, outcome): {:?}", out.counts);
    assert!(
        out.unexpected.is_empty(),
        "{} unexpected answers, first ones: {:#?}",
        out.unexpected.len(),
        &out.unexpected[..out.unexpected.len().min(20)]
    );
    for op in [
        "RegisterImage",
        "DescribeImages",
        "CreateTags",
        "ModifyImageAttribute",
        "DeregisterImage",
    ] {
        assert!(
            out.counts
                .get(&(op.to_string(), "200".to_string()))
                .copied()
                .unwrap_or(0)
                > 0,
            "no successful {op} during the run; the test proved nothing about it"
        );
    }
    for scope in scopes.iter() {
        let c = &scope.client;
        let images = assert_image_invariants(c);
        let listed: HashSet<String> = images.iter().map(|i| i.id.clone()).collect();
        let l = scope.ledger.lock().unwrap();
        let expected: HashSet<String> = l.registered.difference(&l.deregistered).cloned().collect();
        let lost: Vec<_> = expected.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&expected).collect();
        assert!(
            lost.is_empty(),
            "{} {}: registered images missing: {lost:?}",
            c.creds.access_key_id,
            c.region
        );
        assert!(
            extra.is_empty(),
            "{} {}: deregistered or unknown images listed: {extra:?}",
            c.creds.access_key_id,
            c.region
        );
        let by_id: HashMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
        for id in &expected {
            assert_eq!(
                by_id[id.as_str()].tag("kind"),
                Some("conc"),
                "image {id} lost its creation tags"
            );
        }
    }
}
