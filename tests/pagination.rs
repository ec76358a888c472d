//! DescribeImages pagination stays consistent while other clients write: no item repeated,
//! no item skipped that existed throughout the walk.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

/// Generous bound on pages per walk, so a token loop fails instead of hanging.
const MAX_PAGES: usize = 2_000;

/// Walks every page of DescribeImages with `params` and `MaxResults=max`; returns the ids in
/// the order seen. Panics on a non-200 page or on a page larger than `max`.
fn walk(c: &Client, params: &[(String, String)], max: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut q = params.to_vec();
        q.push(("MaxResults".into(), max.to_string()));
        if let Some(t) = &token {
            q.push(("NextToken".into(), t.clone()));
        }
        let body = c.ec2_ok("DescribeImages", &q);
        let page = parse_images(&body);
        assert!(
            page.len() <= max as usize,
            "page of {} images with MaxResults={max}",
            page.len()
        );
        seen.extend(page.into_iter().map(|i| i.id));
        token = next_token(&body);
        if token.is_none() {
            return seen;
        }
    }
    panic!("DescribeImages MaxResults={max} did not end within {MAX_PAGES} pages");
}

fn first_page(c: &Client, max: u32) -> (Vec<String>, String) {
    let body = c.ec2_ok(
        "DescribeImages",
        &p(&[("Owner.1", "self"), ("MaxResults", &max.to_string())]),
    );
    let ids = parse_images(&body).into_iter().map(|i| i.id).collect();
    let token = next_token(&body)
        .unwrap_or_else(|| panic!("first page of MaxResults={max} has no nextToken: {body}"));
    (ids, token)
}

fn rest_of_walk(c: &Client, token: String, max: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token = Some(token);
    for _ in 0..MAX_PAGES {
        let Some(t) = token.take() else { return seen };
        let body = c.ec2_ok(
            "DescribeImages",
            &p(&[
                ("Owner.1", "self"),
                ("MaxResults", &max.to_string()),
                ("NextToken", &t),
            ]),
        );
        seen.extend(parse_images(&body).into_iter().map(|i| i.id));
        token = next_token(&body);
    }
    panic!("walk did not end within {MAX_PAGES} pages");
}

fn register_many(c: &Client, prefix: &str, n: usize, snap: &str) -> Vec<String> {
    (0..n)
        .map(|i| register_image(c, &format!("{prefix}-{i}"), snap, &[]))
        .collect()
}

#[test]
fn walk_pages_after_deregistering_seen_images_skips_nothing() {
    // Arrange
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let all: HashSet<String> = register_many(&c, "del", 20, &snap).into_iter().collect();
    let (page1, token) = first_page(&c, 5);
    assert!(
        !page1.is_empty(),
        "first page with MaxResults=5 of 20 images is empty"
    );

    // Act: remove everything already seen, then continue.
    for id in &page1 {
        c.ec2_ok("DeregisterImage", &p(&[("ImageId", id)]));
    }
    let rest = rest_of_walk(&c, token, 5);

    // Assert: every image that existed throughout (all but page 1) is seen, exactly once.
    let mut seen = page1.clone();
    seen.extend(rest.iter().cloned());
    assert!(
        duplicates(seen.iter().map(String::as_str)).is_empty(),
        "repeated: {seen:?}"
    );
    let throughout: HashSet<&String> = all.iter().filter(|id| !page1.contains(id)).collect();
    let rest_set: HashSet<&String> = rest.iter().collect();
    let skipped: Vec<_> = throughout.difference(&rest_set).collect();
    assert!(
        skipped.is_empty(),
        "walk skipped {} images that existed throughout: {skipped:?}",
        skipped.len()
    );
}

#[test]
fn walk_pages_after_registering_more_images_repeats_nothing() {
    // Arrange
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let before: HashSet<String> = register_many(&c, "old", 20, &snap).into_iter().collect();
    let (page1, token) = first_page(&c, 5);

    // Act: add 20 images (random ids: many sort before the cursor), then continue.
    register_many(&c, "new", 20, &snap);
    let rest = rest_of_walk(&c, token, 5);

    // Assert
    let mut seen = page1.clone();
    seen.extend(rest);
    let dup = duplicates(seen.iter().map(String::as_str));
    assert!(dup.is_empty(), "walk repeated {dup:?}");
    let seen_set: HashSet<&String> = seen.iter().collect();
    let skipped: Vec<_> = before.iter().filter(|id| !seen_set.contains(id)).collect();
    assert!(
        skipped.is_empty(),
        "walk skipped images that existed throughout: {skipped:?}"
    );
}

/// Registers and deregisters `{prefix}-*` images until `stop`, collecting unexpected answers.
fn churn(
    c: Client,
    prefix: &str,
    writer: usize,
    snap: String,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut live = std::collections::VecDeque::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("{prefix}-{writer}-{n}");
        n += 1;
        match c.ec2_owned("RegisterImage", &register_params(&name, &snap, &[])) {
            (200, body) => live.push_back(xml_value(&body, "imageId").expect("imageId")),
            (s, body) => errors
                .lock()
                .unwrap()
                .push(format!("RegisterImage {name}: {s} {body}")),
        }
        if live.len() > 4 {
            let id = live.pop_front().unwrap();
            let (s, body) = c.ec2("DeregisterImage", &[("ImageId", &id)]);
            if s != 200 {
                errors
                    .lock()
                    .unwrap()
                    .push(format!("DeregisterImage {id}: {s} {body}"));
            }
        }
    }
}

/// Walks with `filter` while three writers churn images named `{churn_prefix}-*`; the 60
/// `stable-*` images exist throughout, the 10 `other-*` images too but may be filtered out.
/// Returns the `other-*` ids and the walks (MaxResults, ids seen).
fn walk_during_churn(
    filter: &[(&str, &str)],
    churn_prefix: &'static str,
) -> (HashSet<String>, Vec<(u32, Vec<String>)>) {
    // Arrange
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let stable: HashSet<String> = register_many(&c, "stable", 60, &snap).into_iter().collect();
    let others: HashSet<String> = register_many(&c, "other", 10, &snap).into_iter().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (c, snap, stop, errors) = (c.clone(), snap.clone(), stop.clone(), errors.clone());
            std::thread::spawn(move || churn(c, churn_prefix, w, snap, stop, errors))
        })
        .collect();

    // Act: two walkers, several walks each with page sizes 5..50.
    let params = p(filter);
    let walkers: Vec<_> = [[5u32, 7, 12, 50, 5, 23], [6, 5, 31, 9, 17, 50]]
        .into_iter()
        .map(|sizes| {
            let (c, params) = (c.clone(), params.clone());
            std::thread::spawn(move || {
                sizes
                    .iter()
                    .map(|&m| (m, walk(&c, &params, m)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let walks: Vec<(u32, Vec<String>)> = walkers
        .into_iter()
        .flat_map(|w| w.join().expect("walker panicked"))
        .collect();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer panicked");
    }

    // Assert
    let errors = errors.lock().unwrap();
    assert!(errors.is_empty(), "writers got errors: {errors:#?}");
    for (max, ids) in &walks {
        let dup = duplicates(ids.iter().map(String::as_str));
        assert!(
            dup.is_empty(),
            "walk with MaxResults={max} repeated {dup:?}"
        );
        let seen: HashSet<&String> = ids.iter().collect();
        let skipped: Vec<_> = stable.iter().filter(|id| !seen.contains(id)).collect();
        assert!(
            skipped.is_empty(),
            "walk with MaxResults={max} skipped {} stable images: {skipped:?}",
            skipped.len()
        );
    }
    (others, walks)
}

#[test]
fn walk_images_during_register_and_deregister_sees_each_stable_image_once() {
    let (others, walks) = walk_during_churn(&[("Owner.1", "self")], "churn");

    for (max, ids) in &walks {
        let skipped: Vec<_> = others.iter().filter(|id| !ids.contains(id)).collect();
        assert!(
            skipped.is_empty(),
            "walk with MaxResults={max} skipped other-* images: {skipped:?}"
        );
    }
}

#[test]
fn walk_images_with_name_filter_during_churn_sees_each_stable_image_once() {
    // The churned images match the filter too, so they move the walk's position.
    let filter = [
        ("Owner.1", "self"),
        ("Filter.1.Name", "name"),
        ("Filter.1.Value.1", "stable-*"),
    ];
    let (others, walks) = walk_during_churn(&filter, "stable-churn");

    for (max, ids) in &walks {
        let leaked: Vec<_> = ids.iter().filter(|id| others.contains(*id)).collect();
        assert!(
            leaked.is_empty(),
            "walk with MaxResults={max} returned images not matching the filter: {leaked:?}"
        );
    }
}

#[test]
fn walk_images_with_name_filter_returns_exactly_the_matches() {
    // Arrange
    let server = KilnServer::start();
    let c = server.client("us-east-1");
    let snap = c.create_completed_snapshot();
    let wanted: HashSet<String> = register_many(&c, "match", 23, &snap).into_iter().collect();
    register_many(&c, "other", 12, &snap);

    // Act
    let ids = walk(
        &c,
        &p(&[
            ("Owner.1", "self"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", "match-*"),
        ]),
        5,
    );

    // Assert
    assert_eq!(ids.len(), wanted.len(), "walk returned {ids:?}");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), wanted);
}
