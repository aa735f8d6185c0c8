//! A real nats-server with JetStream on a free loopback port, configured like a deployment:
//! the shipped `deploy/nats/nats-server.conf`, with users generated from the shipped
//! templates for the hubs and for the test instances ([`INSTANCE_USERS`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process;

/// The instances the test server has users for.
pub const INSTANCE_USERS: &[&str] = &["alpha", "beta", "gamma"];

const SERVER_CONF: &str = include_str!("../../deploy/nats/nats-server.conf");
const HUB_USER: &str = include_str!("../../deploy/nats/hub-user.conf.in");
const INSTANCE_USER: &str = include_str!("../../deploy/nats/instance-user.conf.in");

/// The password of a test user.
pub fn password(user: &str) -> String {
    format!("test-{user}-nats-password")
}

/// `url` with the credentials of `user` in place of any it carries.
pub fn url_as(url: &str, user: &str) -> String {
    let Some(rest) = url.strip_prefix("nats://") else { return url.to_owned() };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("nats://{user}:{}@{host}", password(user))
}

/// A client connected with the credentials `url` carries.
pub async fn connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    hub::link::connect(url).await
}

/// The `users.conf` of the test server, from the shipped templates.
fn users_conf() -> String {
    let user = |template: &str, name: &str| template.replace("@USER@", name).replace("@PASSWORD@", &password(name));
    let mut users = vec![user(HUB_USER, "hub")];
    users.extend(INSTANCE_USERS.iter().map(|id| user(INSTANCE_USER, id)));
    format!("authorization {{\n  users = [\n{}\n  ]\n}}\n", users.join("\n"))
}

pub struct NatsServer {
    pub port: u16,
    pub store_dir: PathBuf,
    child: Option<Child>,
    /// The configuration file passed with `-c`.
    config: PathBuf,
}

impl NatsServer {
    /// The server shared by every test of this binary.
    pub fn shared() -> &'static NatsServer {
        static SERVER: OnceLock<NatsServer> = OnceLock::new();
        SERVER.get_or_init(|| NatsServer::start().expect("start nats-server"))
    }

    /// A server of the caller's own (to stop and restart in a test).
    pub fn start() -> anyhow::Result<NatsServer> {
        Self::start_with(None)
    }

    /// A server of the caller's own whose configuration file also holds `config`
    /// (nats-server syntax, e.g. `max_payload: 65536`); the command line still sets port
    /// and store.
    pub fn start_with_config(config: &str) -> anyhow::Result<NatsServer> {
        Self::start_with(Some(config))
    }

    fn start_with(config: Option<&str>) -> anyhow::Result<NatsServer> {
        let store_dir = process::new_dir("nats");
        let path = store_dir.join("nats-server.conf");
        std::fs::write(&path, format!("{SERVER_CONF}\n{}\n", config.unwrap_or_default()))?;
        std::fs::write(store_dir.join("users.conf"), users_conf())?;
        let config = path;
        let mut server = NatsServer { port: 0, store_dir, child: None, config };
        for _ in 0..5 {
            server.port = process::free_port();
            if server.spawn().is_ok() {
                return Ok(server);
            }
        }
        bail!("nats-server did not start")
    }

    /// The URL with the hubs' credentials (what a hub is given).
    pub fn url(&self) -> String {
        self.url_as("hub")
    }

    /// A client with the hubs' credentials (to look into the stream).
    pub async fn client(&self) -> async_nats::Client {
        connect(&self.url()).await.expect("connect to nats-server as the hubs")
    }

    /// The URL with the credentials of `user` (`hub` or an instance id).
    pub fn url_as(&self, user: &str) -> String {
        url_as(&format!("nats://127.0.0.1:{}", self.port), user)
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::signal(child.id(), "TERM");
            let _ = child.wait();
            process::unregister(child.id());
        }
    }

    /// SIGKILL, as a crash would; `restart` brings it back on the same store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            process::unregister(child.id());
        }
    }

    /// Starts it again on the same port with the same JetStream store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let program = process::find_program("nats-server", &[])
            .context("`nats-server` not found: install it (deploy/install-deps.sh)")?;
        let log = std::fs::File::create(self.store_dir.join("nats.log"))?;
        let mut child = Command::new(program)
            .arg("-c")
            .arg(&self.config)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        process::register(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                process::unregister(child.id());
                bail!("nats-server exited at start");
            }
            if self.info().is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        bail!("nats-server did not answer")
    }

    /// The server's INFO line (JSON), read from a raw connection.
    pub fn info(&self) -> anyhow::Result<serde_json::Value> {
        use std::io::{BufRead, BufReader};
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        let json = line.strip_prefix("INFO ").context("nats-server greets with INFO")?;
        Ok(serde_json::from_str(json.trim())?)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
