//! A real PostgreSQL server per test binary, and a fresh database per test.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process;

const TEMPLATE: &str = "hub_template";
/// The role every test hub serves as: it gets only the rights `hub migrate` grants it.
pub const SERVING_ROLE: &str = "hub_serve";

pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    pub pid: u32,
}

/// How a server is tuned: tests trade durability for speed, benchmarks keep the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Off,
    Default,
}

impl PgServer {
    /// The server shared by every test of this binary, with a migrated template database.
    pub fn shared() -> &'static PgServer {
        static SERVER: OnceLock<PgServer> = OnceLock::new();
        SERVER.get_or_init(|| {
            // Set up on a thread of its own: the caller may be inside a tokio runtime.
            std::thread::spawn(|| {
                let server = PgServer::start(Durability::Off).expect("start PostgreSQL");
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(server.create_template()).expect("create the migrated template database");
                server
            })
            .join()
            .expect("PostgreSQL set-up thread")
        })
    }

    /// Starts a new server (initdb into a fresh directory, then `postgres` on a free port).
    pub fn start(durability: Durability) -> anyhow::Result<PgServer> {
        Self::start_with(durability, &[])
    }

    /// [`PgServer::start`] with more server settings, each passed as `-c name=value` (a
    /// benchmark preloads `pg_stat_statements` this way).
    pub fn start_with(durability: Durability, settings: &[(&str, &str)]) -> anyhow::Result<PgServer> {
        let dir = process::new_dir("pg");
        let data = dir.join("data");
        let owner = if running_as_root() { Some(postgres_user()?) } else { None };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let mut initdb = pg_command("initdb", owner, &dir)?;
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let out = initdb.output().context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        for _ in 0..5 {
            let port = process::free_port();
            let log = std::fs::File::create(dir.join("postgres.log"))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid))?;
            }
            let mut postgres = pg_command("postgres", owner, &dir)?;
            postgres.arg("-D").arg(&data).arg("-k").arg(&dir).args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ]);
            if durability == Durability::Off {
                postgres.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
            }
            for (name, value) in settings {
                postgres.arg("-c").arg(format!("{name}={value}"));
            }
            let mut child = postgres.stdout(Stdio::null()).stderr(log).spawn().context("starting postgres")?;
            process::register(child.id(), "INT");
            let server = PgServer { port, dir: dir.clone(), pid: child.id() };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    break; // most likely the port was taken: try another
                }
                if server.accepts_connections() {
                    return Ok(server);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        bail!("postgres did not start; see {}", dir.join("postgres.log").display())
    }

    /// Stops the server (fast shutdown: every session is cut) and starts it again on the
    /// same port and data directory, as a PostgreSQL restart under running clients.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        process::signal(self.pid, "INT");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && !is_zombie(self.pid) {
            if Instant::now() > deadline {
                bail!("postgres did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        process::unregister(self.pid);
        let owner = if running_as_root() { Some(postgres_user()?) } else { None };
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.join("postgres.log"))?;
        let mut postgres = pg_command("postgres", owner, &self.dir)?;
        postgres.arg("-D").arg(self.dir.join("data")).arg("-k").arg(&self.dir).args([
            "-p",
            &self.port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
        ]);
        let child = postgres.stdout(Stdio::null()).stderr(log).spawn().context("restarting postgres")?;
        process::register(child.id(), "INT");
        self.pid = child.id();
        // Reaped by a thread of its own, so a later restart sees it gone.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.accepts_connections() {
            if Instant::now() > deadline {
                bail!("postgres did not come back; see {}", self.dir.join("postgres.log").display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn accepts_connections(&self) -> bool {
        Command::new(pg_program("pg_isready").unwrap_or_else(|_| "pg_isready".into()))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .status()
            .is_ok_and(|s| s.success())
    }

    async fn admin(&self) -> anyhow::Result<tokio_postgres::Client> {
        let config: tokio_postgres::Config = self.url("postgres").parse()?;
        Ok(hub::db::connect(&config).await?)
    }

    /// Creates the migrated template that `migrated_database` clones.
    pub async fn create_template(&self) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        admin.batch_execute(&format!("CREATE ROLE {SERVING_ROLE} LOGIN")).await?;
        admin.batch_execute(&format!("CREATE DATABASE {TEMPLATE}")).await?;
        // As `hub migrate` does it: the owner migrates and grants the serving role its rights.
        hub::migrate::prepare(&self.url(TEMPLATE).parse()?, Some(SERVING_ROLE)).await?;
        Ok(())
    }

    /// A new database with the hub's schema applied (cloned from the template).
    pub async fn migrated_database(&self) -> TestDatabase {
        self.create_database(Some(TEMPLATE)).await
    }

    /// A new, empty database.
    pub async fn empty_database(&self) -> TestDatabase {
        self.create_database(None).await
    }

    async fn create_database(&self, template: Option<&str>) -> TestDatabase {
        // Cloning needs nobody on the template; serializing the clones keeps it that way.
        static CLONING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        let _guard = CLONING.lock().await;
        let admin = self.admin().await.expect("connect to the test server");
        admin.batch_execute(&sql).await.expect("create a test database");
        TestDatabase { url: self.url(&name), name }
    }
}

/// A database of the shared server that belongs to one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// A migrated database on the server shared by this test binary.
    pub async fn new() -> TestDatabase {
        PgServer::shared().migrated_database().await
    }

    /// The URL of this database for the serving role (the superuser's `url` with another user).
    pub fn serving_url(&self) -> String {
        serving_url(&self.url)
    }

    pub fn config(&self) -> tokio_postgres::Config {
        self.url.parse().expect("test database URLs parse")
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        hub::db::connect(&self.config()).await.expect("connect to the test database")
    }

    pub fn pool(&self, size: usize) -> deadpool_postgres::Pool {
        hub::db::pool(self.config(), size)
    }
}

/// A test server's URL for the serving role; any other URL as it is.
pub fn serving_url(url: &str) -> String {
    match url.strip_prefix("postgres://postgres@") {
        Some(rest) => format!("postgres://{SERVING_ROLE}@{rest}"),
        None => url.to_owned(),
    }
}

/// Whether `pid` has exited but is not yet reaped (its parent, the test, never waits on it).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of the `postgres` account: initdb refuses to run as root.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .context("running as root needs a `postgres` user (apt-get install postgresql creates it)")
}

fn pg_command(name: &str, owner: Option<(u32, u32)>, cwd: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(pg_program(name)?);
    command.current_dir(cwd).stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    Ok(command)
}

/// PostgreSQL's programs: on PATH, or in Debian's versioned directory.
pub fn pg_program(name: &str) -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.reverse();
    process::find_program(name, &versions)
        .with_context(|| format!("`{name}` not found: install PostgreSQL (deploy/install-deps.sh)"))
}
