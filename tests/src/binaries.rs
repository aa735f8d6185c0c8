//! The real `hub` (and later `instance`) binaries, run as child processes.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::process;

/// The operator key every test hub is started with.
pub const OPERATOR_KEY: &str = "test-operator-key-0123456789abcdefghijklmnop";
/// The master key (32 bytes, base64) every test hub is started with.
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The directory cargo put this workspace's binaries in (`target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let deps = exe.parent().expect("test binaries live in target/<profile>/deps");
    if deps.ends_with("deps") { deps.parent().unwrap_or(deps).to_path_buf() } else { deps.to_path_buf() }
}

/// The path of one of the workspace's binaries; built by the README's test command.
pub fn binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Runs `hub <args>` against a database and waits for it to finish.
pub fn hub_command(database_url: &str, args: &[&str]) -> Output {
    Command::new(binary("hub"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the hub binary")
}

/// A running `hub serve` or `instance serve`; killed when dropped.
pub struct HubProcess {
    child: Option<Child>,
    pub addr: std::net::SocketAddr,
    pub log: PathBuf,
}

/// The same kind of process, for an instance.
pub type InstanceProcess = HubProcess;

impl HubProcess {
    /// Starts `hub serve <args>` on a free port and waits until `/healthz` answers. It
    /// serves as the least-privileged serving role, not as the test server's superuser.
    pub async fn spawn(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> HubProcess {
        let serving_url = crate::postgres::serving_url(database_url);
        let mut full_env = vec![
            ("DATABASE_URL", serving_url.as_str()),
            ("HUB_OPERATOR_KEY", OPERATOR_KEY),
            ("HUB_MASTER_KEY", MASTER_KEY),
        ];
        full_env.extend_from_slice(env);
        let mut full_args = vec!["serve"];
        full_args.extend_from_slice(args);
        Self::start("hub", "HUB_LISTEN_ADDR", &full_args, &full_env).await
    }

    /// Starts `instance serve` named `instance_id`, with its own database, consuming from
    /// `nats_url` (as its own NATS user) and with the hub at `hub_url` as its fallback.
    pub async fn instance(instance_id: &str, database_url: &str, nats_url: &str, hub_url: &str) -> InstanceProcess {
        Self::instance_with_env(instance_id, database_url, nats_url, hub_url, &[]).await
    }

    /// [`HubProcess::instance`] with more environment variables.
    pub async fn instance_with_env(
        instance_id: &str,
        database_url: &str,
        nats_url: &str,
        hub_url: &str,
        extra: &[(&str, &str)],
    ) -> InstanceProcess {
        let nats_url = crate::nats::url_as(nats_url, instance_id);
        let mut env = vec![
            ("INSTANCE_ID", instance_id),
            ("INSTANCE_DATABASE_URL", database_url),
            ("NATS_URL", nats_url.as_str()),
            ("HUB_URL", hub_url),
            ("HUB_OPERATOR_KEY", OPERATOR_KEY),
            ("HUB_MASTER_KEY", MASTER_KEY),
        ];
        env.extend_from_slice(extra);
        Self::start("instance", "INSTANCE_LISTEN_ADDR", &["serve"], &env).await
    }

    /// Starts `instance serve` over NATS only: no `HUB_URL` and no operator key.
    pub async fn instance_over_nats(instance_id: &str, database_url: &str, nats_url: &str) -> InstanceProcess {
        let nats_url = crate::nats::url_as(nats_url, instance_id);
        let env = [
            ("INSTANCE_ID", instance_id),
            ("INSTANCE_DATABASE_URL", database_url),
            ("NATS_URL", nats_url.as_str()),
            ("HUB_MASTER_KEY", MASTER_KEY),
        ];
        Self::start("instance", "INSTANCE_LISTEN_ADDR", &["serve"], &env).await
    }

    async fn start(binary_name: &str, listen_var: &str, args: &[&str], env: &[(&str, &str)]) -> HubProcess {
        let dir = process::new_dir(binary_name);
        let log = dir.join(format!("{binary_name}.log"));
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], process::free_port()).into();
        let child = Command::new(binary(binary_name))
            .args(args)
            .env(listen_var, addr.to_string())
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the process log"))
            .spawn()
            .expect("start the binary");
        process::register(child.id(), "KILL");
        let mut hub = HubProcess { child: Some(child), addr, log };
        let client = crate::api::client();
        let url = hub.url("/healthz");
        crate::wait_until(&format!("{binary_name} to answer /healthz"), Duration::from_secs(30), || {
            let request = client.get(&url).send();
            let exited = hub.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let log = hub.logs();
            async move {
                assert!(exited.is_none(), "the process exited at start: {exited:?}\n{log}");
                request.await.ok().filter(|r| r.status().is_success()).map(|_| ())
            }
        })
        .await;
        hub
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        process::signal(child.id(), "TERM");
        let status = child.wait().ok();
        process::unregister(child.id());
        status
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            process::unregister(child.id());
        }
    }

    /// Which of `hubs` holds the relay's leadership (waits until one does).
    pub async fn relay_leader(hubs: &[HubProcess]) -> usize {
        crate::wait_until("a relay leader", Duration::from_secs(20), || {
            let found = hubs.iter().position(|h| h.logs().contains("relay leader elected"));
            async move { found }
        })
        .await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
