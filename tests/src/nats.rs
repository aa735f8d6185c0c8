//! A real nats-server with JetStream on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process;

pub struct NatsServer {
    pub port: u16,
    pub store_dir: PathBuf,
    child: Option<Child>,
    /// A configuration file passed with `-c` (e.g. a smaller `max_payload`).
    config: Option<PathBuf>,
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

    /// A server of the caller's own whose configuration file holds `config` (nats-server
    /// syntax, e.g. `max_payload: 65536`); the command line still sets port and store.
    pub fn start_with_config(config: &str) -> anyhow::Result<NatsServer> {
        Self::start_with(Some(config))
    }

    fn start_with(config: Option<&str>) -> anyhow::Result<NatsServer> {
        let store_dir = process::new_dir("nats");
        let config = match config {
            Some(text) => {
                let path = store_dir.join("nats.conf");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let mut server = NatsServer { port: 0, store_dir, child: None, config };
        for _ in 0..5 {
            server.port = process::free_port();
            if server.spawn().is_ok() {
                return Ok(server);
            }
        }
        bail!("nats-server did not start")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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
        let mut command = Command::new(program);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let mut child = command
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
