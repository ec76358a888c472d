//! The `kiln` command line: first-start credentials, `account create` / `account list`, with
//! and without the server running.

mod common;

use common::*;

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "kiln exited with {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_key_works(server: &KilnServer, creds: &Creds) {
    let c = server.client_with(creds.clone(), "us-east-1");
    let (status, body) = c.ec2("DescribeImages", &[("Owner.1", "self")]);
    assert_eq!(
        status, 200,
        "new key {} refused: {body}",
        creds.access_key_id
    );
}

#[test]
fn first_start_in_empty_dir_writes_credentials_that_authenticate() {
    // Arrange + Act: KilnServer::start starts on an empty data dir.
    let server = KilnServer::start();

    // Assert
    let text =
        std::fs::read_to_string(server.data_dir().join("credentials")).expect("DIR/credentials");
    assert!(
        text.lines().any(|l| l.trim() == "[kiln]"),
        "no [kiln] profile:\n{text}"
    );
    let creds = parse_credentials(&text, "kiln").expect("both keys in [kiln]");
    assert!(
        !creds.access_key_id.is_empty() && !creds.secret_access_key.is_empty(),
        "{text}"
    );
    assert_key_works(&server, &creds);
    assert!(
        server.logs().contains(&creds.access_key_id),
        "first start did not print the key:\n{}",
        server.logs()
    );
}

#[test]
fn restart_keeps_first_account_credentials() {
    let mut server = KilnServer::start();
    let before = std::fs::read_to_string(server.data_dir().join("credentials")).unwrap();

    server.restart();

    let after = std::fs::read_to_string(server.data_dir().join("credentials")).unwrap();
    assert_eq!(before, after, "credentials file changed on restart");
    assert_key_works(&server, &server.creds());
}

#[test]
fn account_create_json_while_serving_prints_key_that_works_at_once() {
    // Arrange
    let server = KilnServer::start();

    // Act
    let out = server.cli(&["account", "create", "alice", "--json"]);

    // Assert
    let account = parse_account_json(&stdout_of(&out));
    assert_eq!(
        account.account_id.len(),
        12,
        "AccountId {:?}",
        account.account_id
    );
    assert!(
        account.account_id.bytes().all(|b| b.is_ascii_digit()),
        "AccountId {:?}",
        account.account_id
    );
    assert!(!account.creds.access_key_id.is_empty() && !account.creds.secret_access_key.is_empty());
    assert_ne!(account.creds.access_key_id, server.creds().access_key_id);
    assert_key_works(&server, &account.creds);
}

#[test]
fn account_create_json_prints_exactly_the_documented_fields() {
    let server = KilnServer::start();

    let out = server.cli(&["account", "create", "fields", "--json"]);

    let v: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).expect("JSON");
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["AccessKeyId", "AccountId", "SecretAccessKey"]);
}

#[test]
fn account_create_with_explicit_id_and_keys_uses_them() {
    // Arrange
    let server = KilnServer::start();
    let creds = Creds {
        access_key_id: "AKIAKILNTESTEXPLICIT".into(),
        secret_access_key: "explicitSecretForTheKilnCliTest0123456789".into(),
    };

    // Act
    let account = server.create_account(
        "explicit",
        &[
            "--account-id",
            "123456789012",
            "--access-key-id",
            &creds.access_key_id,
            "--secret-access-key",
            &creds.secret_access_key,
        ],
    );

    // Assert
    assert_eq!(account.account_id, "123456789012");
    assert_eq!(account.creds, creds);
    assert_key_works(&server, &creds);
}

#[test]
fn account_created_key_owns_its_own_images() {
    // Arrange: the new account registers an image.
    let server = KilnServer::start();
    let account = server.create_account("owner-check", &["--account-id", "210987654321"]);
    let c = server.client_with(account.creds.clone(), "us-east-1");
    let snap = c.create_completed_snapshot();
    let image = register_image(&c, "owned-by-new-account", &snap, &[]);

    // Act
    let mine = c.own_images();
    let defaults = server.client("us-east-1").own_images();

    // Assert
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].id, image);
    assert_eq!(mine[0].owner_id, "210987654321");
    assert!(
        defaults.iter().all(|i| i.id != image),
        "default account lists the new account's image as its own"
    );
}

#[test]
fn account_list_after_create_shows_account() {
    // Arrange
    let server = KilnServer::start();
    let account = server.create_account("listed-account", &[]);

    // Act
    let text = stdout_of(&server.cli(&["account", "list"]));
    let json = stdout_of(&server.cli(&["account", "list", "--json"]));

    // Assert
    assert!(
        text.contains("listed-account"),
        "account list lacks the name:\n{text}"
    );
    assert!(
        text.contains(&account.account_id),
        "account list lacks the id:\n{text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("list --json ({e}): {json}"));
    let flat = v.to_string();
    assert!(
        flat.contains("listed-account") && flat.contains(&account.account_id),
        "list --json: {json}"
    );
}

#[test]
fn account_create_while_stopped_key_works_after_start() {
    // Arrange: initialise the data dir, then stop the server.
    let mut server = KilnServer::start();
    server.kill9();

    // Act
    let account = server.create_account("offline", &[]);
    server.restart();

    // Assert
    assert_key_works(&server, &account.creds);
    let text = stdout_of(&server.cli(&["account", "list"]));
    assert!(text.contains("offline"), "{text}");
}

#[test]
fn account_create_with_malformed_account_id_fails() {
    let server = KilnServer::start();

    let out = server.cli(&[
        "account",
        "create",
        "bad-id",
        "--account-id",
        "12345",
        "--json",
    ]);

    assert!(
        !out.status.success(),
        "account id 12345 accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn serve_with_auto_accelerator_logs_which_accelerator_it_uses() {
    // Arrange: a server of its own, with the default `--accelerator auto`.
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = std::process::Command::new(kiln_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn kiln serve");

    // Act: the probe (a real boot under KVM, up to 20 s) or its absence is reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut text = String::new();
    while std::time::Instant::now() < deadline {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("accelerator: ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();

    // Assert
    let line = text
        .lines()
        .find(|l| l.contains("accelerator: "))
        .unwrap_or_else(|| panic!("no accelerator line in the log:\n{text}"));
    assert!(
        line.contains("accelerator: kvm (") || line.contains("accelerator: tcg ("),
        "{line}"
    );
}
