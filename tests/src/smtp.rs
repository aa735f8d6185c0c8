//! A real SMTP server for tests: Debian's aiosmtpd, storing every message in a Maildir.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process;

pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

/// One received email, decoded enough for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: String,
    pub subject: String,
    /// The whole message with quoted-printable soft breaks and escapes undone.
    pub text: String,
}

impl ReceivedMail {
    /// The first `token=...` value following `path` in the message.
    pub fn link_token(&self, path: &str) -> Option<String> {
        let start = self.text.find(&format!("{path}?token="))? + path.len() + "?token=".len();
        Some(self.text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
    }
}

impl SmtpServer {
    pub fn start() -> anyhow::Result<SmtpServer> {
        let maildir = process::new_dir("smtp");
        for folder in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(folder))?;
        }
        let mut server = SmtpServer { port: 0, maildir, child: None };
        for _ in 0..5 {
            server.port = process::free_port();
            if server.spawn().is_ok() {
                return Ok(server);
            }
        }
        bail!("the SMTP server did not start")
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.maildir.with_extension("log"))?;
        // Debian's python3 has the aiosmtpd package (deploy/install-deps.sh installs it).
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&self.maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting /usr/bin/python3 -m aiosmtpd")?;
        process::register(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                process::unregister(child.id());
                bail!("aiosmtpd exited at start (is python3-aiosmtpd installed?)");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        bail!("aiosmtpd did not answer")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            process::unregister(child.id());
        }
    }

    /// Starts it again on the same port, keeping the received mail.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        let mut messages = Vec::new();
        for folder in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(folder)) else { continue };
            for entry in entries.flatten() {
                if let Ok(raw) = std::fs::read_to_string(entry.path()) {
                    messages.push(parse(&raw));
                }
            }
        }
        messages
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header(raw: &str, name: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    raw.lines()
        .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
        .map(|line| line[prefix.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn parse(raw: &str) -> ReceivedMail {
    let to = header(raw, "To");
    let to = to.rsplit_once('<').map_or(to.clone(), |(_, rest)| rest.trim_end_matches('>').to_owned());
    ReceivedMail { to, subject: header(raw, "Subject"), text: decode_quoted_printable(raw) }
}

/// Undoes quoted-printable soft line breaks and `=XX` escapes (harmless on 7-bit text
/// without `=` escapes).
fn decode_quoted_printable(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
