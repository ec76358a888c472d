//! The `kiln` binary: `kiln serve` and the admin commands.

mod image_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiln::accounts::{self, NewAccount};
use kiln::service::{Service, ServiceConfig};
use kiln::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Kiln: a self-hosted machine-image service that speaks the EC2 API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Data directory (metadata database, credentials).
    #[arg(long, global = true, default_value = "./kiln-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the EC2 and EBS direct APIs.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7780")]
        listen: SocketAddr,
        /// Regions served, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "us-east-1,us-west-2,eu-west-1"
        )]
        regions: Vec<String>,
        /// Directory that file:// imports may read from (repeatable; default: the working
        /// directory and the temporary directory; the data directory never).
        #[arg(long)]
        import_root: Vec<PathBuf>,
        /// Store new blocks zstd-compressed where that saves at least a tenth.
        #[arg(long)]
        compress_blocks: bool,
        /// Seconds a guest may take to power off after the ACPI power button (stop,
        /// reboot, CreateImage) before QEMU is ended.
        #[arg(long, default_value_t = 60)]
        stop_timeout: u64,
        /// `auto`: use KVM only if a probe boot under KVM succeeds (TCG until then);
        /// `tcg`: never probe, always TCG.
        #[arg(long, default_value = "auto", value_parser = ["auto", "tcg"])]
        accelerator: String,
    },
    /// Build (offline, from the Debian kernel and busybox packages) and register the tiny
    /// `kiln-tiny-*` test image, public under the `kiln` owner alias. Run it while
    /// `kiln serve` is not running on the same data directory.
    Quickstart {
        /// Regions to register it in, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "us-east-1,us-west-2,eu-west-1"
        )]
        regions: Vec<String>,
        /// Directory of the kernel and busybox-static .deb files (downloaded with
        /// `apt-get download` when missing; default `$KILN_GUEST_DEBS`, else
        /// `~/.cache/kiln/debs`).
        #[arg(long)]
        debs: Option<PathBuf>,
    },
    /// Check every stored block against its hash; report damaged blocks and their snapshots.
    Scrub,
    /// Storage used by snapshots and images: referenced, unique (what deleting frees), shared.
    Usage {
        /// Only this account's resources.
        #[arg(long)]
        account: Option<String>,
        /// Price per GB-month for the cost estimate.
        #[arg(long, default_value_t = 0.05)]
        price_per_gb_month: f64,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        target: Option<UsageTarget>,
    },
    /// Import and export disk images through a running Kiln.
    Image {
        /// Kiln's endpoint.
        #[arg(long, global = true, default_value = "http://127.0.0.1:7780")]
        endpoint: String,
        /// Region to work in.
        #[arg(long, global = true, default_value = "us-east-1")]
        region: String,
        /// Profile of DIR/credentials to sign with (AWS_ACCESS_KEY_ID and
        /// AWS_SECRET_ACCESS_KEY take precedence).
        #[arg(long, global = true, default_value = "kiln")]
        profile: String,
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Manage accounts and access keys (works while the server runs).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import a raw, qcow2, vmdk, vhd or vhdx file as a snapshot and register an HVM image.
    Import {
        /// The disk image file (on the Kiln host).
        file: PathBuf,
        /// Name of the new image.
        #[arg(long)]
        name: String,
        /// Description of the image.
        #[arg(long)]
        description: Option<String>,
        /// Architecture.
        #[arg(long, default_value = "x86_64")]
        architecture: String,
        /// Boot mode (legacy-bios, uefi).
        #[arg(long)]
        boot_mode: Option<String>,
        /// Root device name.
        #[arg(long, default_value = "/dev/xvda")]
        root_device_name: String,
    },
    /// Write an image's root volume to a file.
    Export {
        /// The image.
        image_id: String,
        /// Output file.
        file: PathBuf,
        /// raw, vmdk or vhd.
        #[arg(long, default_value = "raw")]
        format: String,
    },
}

#[derive(Subcommand)]
enum UsageTarget {
    /// Usage of one image (its snapshots together).
    Image {
        /// The image id.
        image_id: String,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account with an access key.
    Create {
        /// Unique account name.
        name: String,
        /// Twelve-digit account id (random if omitted).
        #[arg(long)]
        account_id: Option<String>,
        /// Access key id (random if omitted; needs --secret-access-key).
        #[arg(long, requires = "secret_access_key")]
        access_key_id: Option<String>,
        /// Secret access key (random if omitted; needs --access-key-id).
        #[arg(long, requires = "access_key_id")]
        secret_access_key: Option<String>,
        /// Organization the account belongs to (for launch permissions by organization).
        #[arg(long)]
        organization_arn: Option<String>,
        /// Organizational unit the account belongs to.
        #[arg(long)]
        organizational_unit_arn: Option<String>,
        /// Print JSON: {"AccountId":..,"AccessKeyId":..,"SecretAccessKey":..}.
        #[arg(long)]
        json: bool,
    },
    /// List accounts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add an access key to an account (by id or name; `kiln` is the built-in image owner).
    AddKey {
        /// Account id or name.
        account: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            regions,
            import_root,
            compress_blocks,
            stop_timeout,
            accelerator,
        } => serve(
            cli.data_dir,
            listen,
            ServiceConfig {
                regions,
                compress_blocks,
                import_roots: import_root,
                stop_timeout: std::time::Duration::from_secs(stop_timeout),
                ..ServiceConfig::default()
            },
            accelerator == "auto",
        ),
        Command::Quickstart { regions, debs } => quickstart(cli.data_dir, regions, debs),
        Command::Account { command } => account(cli.data_dir, command),
        Command::Scrub => scrub(cli.data_dir),
        Command::Image {
            endpoint,
            region,
            profile,
            command,
        } => image(cli.data_dir, &endpoint, &region, &profile, command),
        Command::Usage {
            account,
            price_per_gb_month,
            json,
            target,
        } => usage(cli.data_dir, account, price_per_gb_month, json, target),
    }
}

/// glibc gives each thread that allocates its own heap arena (up to 8 per core), and each
/// arena keeps what its thread freed; with many request threads building large responses
/// that memory adds up. Two arenas keep RSS close to what is live, at no measured cost.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn serve(
    data_dir: PathBuf,
    listen: SocketAddr,
    mut config: ServiceConfig,
    probe_kvm: bool,
) -> anyhow::Result<()> {
    limit_malloc_arenas();
    config.regions.retain(|r| !r.is_empty());
    anyhow::ensure!(
        !config.regions.is_empty(),
        "--regions must name at least one region"
    );
    if config.import_roots.is_empty() {
        config.import_roots = kiln::service::default_import_roots();
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    let service = Service::open(&data_dir, config)
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    if let Some((account, key)) = accounts::first_start(service.store(), &data_dir)? {
        println!("Created account {} ({})", account.account_id, account.name);
        println!("  AccessKeyId:     {}", key.access_key_id);
        println!("  SecretAccessKey: {}", key.secret_access_key);
        println!(
            "  Credentials written to {} (profile {})",
            data_dir.join("credentials").display(),
            accounts::CREDENTIALS_PROFILE
        );
    }
    // Imports a crash interrupted fail; blocks written but never recorded go now.
    service.fail_interrupted_imports()?;
    service.adopt_machines()?;
    let gc = service.collect_garbage(true)?;
    if gc.blocks_deleted + gc.orphans_deleted > 0 {
        tracing::info!(
            "collected {} unreferenced and {} orphaned blocks",
            gc.blocks_deleted,
            gc.orphans_deleted
        );
    }
    let service = Arc::new(service);
    if probe_kvm {
        start_kvm_probe(service.clone());
    } else {
        tracing::info!("accelerator: tcg (--accelerator tcg)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!(
            "kiln listening on http://{listen} (regions: {})",
            service.config().regions.join(", ")
        );
        tokio::spawn(kiln::api::server::run_background_work(service.clone()));
        let served = axum::serve(listener, kiln::api::server::router(service.clone()))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving");
        // Guests keep running; their volumes are flushed and served again after a restart.
        service.release_machines();
        served
    })
}

/// Holds an exclusive lock on the data directory while `kiln serve` runs, so that offline
/// commands that write images (quickstart) cannot write behind its back.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("kiln.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    anyhow::ensure!(
        locked,
        "another kiln serve (or quickstart) is using {}",
        data_dir.display()
    );
    Ok(file)
}

/// Probes KVM in the background with the Quick Start kernel, if it was built; VMs use TCG
/// until the probe has succeeded.
fn start_kvm_probe(service: Arc<Service>) {
    let Some(artifacts) = kiln::quickstart::cached(&kiln::quickstart::default_debs_dir()) else {
        tracing::info!(
            "accelerator: tcg (no Quick Start kernel to probe KVM with; run `kiln quickstart`)"
        );
        return;
    };
    std::thread::spawn(move || {
        let result = kiln::compute::accel::probe(
            &artifacts.kernel,
            &artifacts.initrd,
            kiln::compute::accel::PROBE_TIMEOUT,
        );
        service.set_accelerator(result.accelerator);
        tracing::info!(
            "accelerator: {} ({})",
            result.accelerator.as_str(),
            result.reason
        );
    });
}

fn quickstart(
    data_dir: PathBuf,
    regions: Vec<String>,
    debs: Option<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir).context(
        "kiln quickstart writes to the data directory directly: stop kiln serve, run it, start kiln serve again",
    )?;
    let debs = debs.unwrap_or_else(kiln::quickstart::default_debs_dir);
    let started = std::time::Instant::now();
    let artifacts = kiln::quickstart::build(&debs).context("building the kiln-tiny image")?;
    println!(
        "Built kiln-tiny (kernel {}) in {:.1} s",
        artifacts.kernel_version,
        started.elapsed().as_secs_f64()
    );
    let config = ServiceConfig {
        regions: regions.clone(),
        ..ServiceConfig::default()
    };
    let service = Service::open(&data_dir, config)
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    if let Some((account, key)) = accounts::first_start(service.store(), &data_dir)? {
        println!("Created account {} ({})", account.account_id, account.name);
        println!("  AccessKeyId:     {}", key.access_key_id);
        println!("  SecretAccessKey: {}", key.secret_access_key);
    }
    for region in regions.iter().filter(|r| !r.is_empty()) {
        let image_id = kiln::quickstart::register(&service, region, &artifacts)
            .with_context(|| format!("registering kiln-tiny in {region}"))?;
        println!("{region}: {image_id}");
    }
    Ok(())
}

fn scrub(data_dir: PathBuf) -> anyhow::Result<()> {
    let service = Service::open(&data_dir, ServiceConfig::default())
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let report = service.scrub()?;
    println!("checked {} blocks", report.blocks_checked);
    for (hash, snapshots) in &report.damaged {
        println!(
            "DAMAGED block {hash} in snapshots: {}",
            snapshots.join(", ")
        );
    }
    anyhow::ensure!(
        report.damaged.is_empty(),
        "{} damaged blocks",
        report.damaged.len()
    );
    println!("store is clean");
    Ok(())
}

fn image(
    data_dir: PathBuf,
    endpoint: &str,
    region: &str,
    profile: &str,
    command: ImageCommand,
) -> anyhow::Result<()> {
    let (id, secret) = match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(id), Ok(secret)) => (id, secret),
        _ => kiln::client::read_credentials(&data_dir.join("credentials"), profile)?,
    };
    let client = kiln::client::Client::new(endpoint, region, id, secret)?;
    match command {
        ImageCommand::Import {
            file,
            name,
            description,
            architecture,
            boot_mode,
            root_device_name,
        } => image_cmd::import(
            &client,
            image_cmd::ImportOptions {
                file,
                name,
                description,
                architecture,
                boot_mode,
                root_device_name,
            },
        ),
        ImageCommand::Export {
            image_id,
            file,
            format,
        } => image_cmd::export(&client, &image_id, &file, &format),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn usage(
    data_dir: PathBuf,
    account: Option<String>,
    price: f64,
    json: bool,
    target: Option<UsageTarget>,
) -> anyhow::Result<()> {
    let service = Service::open(&data_dir, ServiceConfig::default())
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    if let Some(UsageTarget::Image { image_id }) = target {
        let line = service.image_usage(&image_id)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&line)?);
        } else {
            println!(
                "{}  logical {}  referenced {}  unique {}  shared {}",
                line.resource_id,
                mib(line.logical_bytes),
                mib(line.referenced_bytes),
                mib(line.unique_bytes),
                mib(line.shared_bytes)
            );
        }
        return Ok(());
    }
    let report = service.usage(account.as_deref(), price)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>12}",
        "RESOURCE", "LOGICAL", "REFERENCED", "UNIQUE", "SHARED"
    );
    for l in report.images.iter().chain(report.snapshots.iter()) {
        println!(
            "{:<24} {:>12} {:>12} {:>12} {:>12}",
            l.resource_id,
            mib(l.logical_bytes),
            mib(l.referenced_bytes),
            mib(l.unique_bytes),
            mib(l.shared_bytes)
        );
    }
    println!();
    println!(
        "{:<14} {:<12} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "ACCOUNT", "REGION", "SNAPS", "LOGICAL", "REFERENCED", "UNIQUE", "$/MONTH"
    );
    for t in &report.totals {
        println!(
            "{:<14} {:<12} {:>6} {:>12} {:>12} {:>12} {:>10.2}",
            t.owner_id,
            t.region,
            t.snapshots,
            mib(t.logical_bytes),
            mib(t.referenced_bytes),
            mib(t.unique_bytes),
            t.monthly_cost
        );
    }
    println!("(estimate at ${price}/GB-month of referenced bytes)");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

fn print_key(
    account: &kiln::service::model::Account,
    key: &kiln::service::model::AccessKey,
    json: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "AccountId": account.account_id,
                "AccessKeyId": key.access_key_id,
                "SecretAccessKey": key.secret_access_key,
            })
        );
    } else {
        println!("AccountId:       {}", account.account_id);
        println!("AccessKeyId:     {}", key.access_key_id);
        println!("SecretAccessKey: {}", key.secret_access_key);
    }
}

fn account(data_dir: PathBuf, command: AccountCommand) -> anyhow::Result<()> {
    // The store alone suffices: accounts are read from SQLite by the server on every request.
    let store = Store::open(&data_dir)
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    match command {
        AccountCommand::Create {
            name,
            account_id,
            access_key_id,
            secret_access_key,
            organization_arn,
            organizational_unit_arn,
            json,
        } => {
            Service::ensure_builtin_owner(&store)?;
            let (account, key) = accounts::create_account(
                &store,
                NewAccount {
                    name,
                    account_id,
                    access_key_id,
                    secret_access_key,
                    organization_arn,
                    organizational_unit_arn,
                },
            )?;
            print_key(&account, &key, json);
        }
        AccountCommand::List { json } => {
            Service::ensure_builtin_owner(&store)?;
            let all = store.list_accounts()?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "AccountId": a.account_id,
                            "Name": a.name,
                            "Alias": a.alias,
                            "OrganizationArn": a.organization_arn,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for a in all {
                    println!(
                        "{}  {}{}",
                        a.account_id,
                        a.name,
                        a.alias
                            .map(|x| format!("  (alias {x})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        AccountCommand::AddKey { account, json } => {
            Service::ensure_builtin_owner(&store)?;
            let (account, key) = accounts::add_key(&store, &account)?;
            print_key(&account, &key, json);
        }
    }
    Ok(())
}
