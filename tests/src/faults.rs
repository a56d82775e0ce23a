//! Private, killable instances of Redis and PostgreSQL for fault-injection and TLS
//! tests, so stopping or reconfiguring one never disturbs the other tests sharing the
//! main services.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tls::TestCerts;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16, up: bool) {
    for _ in 0..200 {
        let open = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if open == up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "port {port} did not become {}",
        if up { "open" } else { "closed" }
    );
}

pub struct TempRedis {
    pub port: u16,
    child: Option<Child>,
    /// Listening options: plaintext `--port`, or TLS only.
    listen: Vec<String>,
}

/// The password of [`TempRedis::start_tls`]'s server (Redis AUTH).
pub const REDIS_TLS_PASSWORD: &str = "tls-test-password";

impl TempRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let mut r = Self {
            port,
            child: None,
            listen: vec!["--port".into(), port.to_string()],
        };
        r.resume().await;
        r
    }

    /// TLS only (`--port 0 --tls-port P`), with a password (`requirepass`).
    pub async fn start_tls(certs: &TestCerts) -> Self {
        let port = free_port();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut r = Self {
            port,
            child: None,
            listen: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(certs.cert_file()),
                "--tls-key-file".into(),
                path(certs.key_file()),
                "--tls-ca-cert-file".into(),
                path(certs.ca_file()),
                "--tls-auth-clients".into(),
                "no".into(),
                "--requirepass".into(),
                REDIS_TLS_PASSWORD.into(),
            ],
        };
        r.resume().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `rediss://` with the password (for a [`TempRedis::start_tls`] server).
    pub fn tls_url(&self) -> String {
        format!("rediss://:{REDIS_TLS_PASSWORD}@127.0.0.1:{}/", self.port)
    }

    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.listen)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        self.child = Some(child);
        wait_for_port(self.port, true).await;
    }

    /// Stops the server without closing its sockets (SIGSTOP): connections stay open
    /// and nothing answers, as with a black-holed network path.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_for_port(self.port, false).await;
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct TempPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn as_postgres(program: &PathBuf) -> Command {
    // initdb refuses to run as root; tests run as root in CI.
    let root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl TempPostgres {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// `ssl = on` with the test certificates, and a `pg_hba.conf` that accepts TLS
    /// connections only (plaintext ones are rejected).
    pub async fn start_tls(certs: &TestCerts) -> Self {
        Self::start_with(Some(certs)).await
    }

    async fn start_with(certs: Option<&TestCerts>) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (make test installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "chatroom-fault-pg-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let status = as_postgres(&bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        if let Some(certs) = certs {
            let data = dir.join("data");
            std::fs::copy(certs.cert_file(), data.join("server.crt")).unwrap();
            std::fs::copy(certs.key_file(), data.join("server.key")).unwrap();
            // PostgreSQL refuses a key readable by others or owned by someone else.
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
            )
            .unwrap();
        }
        let pg = Self {
            port: free_port(),
            dir,
            bin,
        };
        pg.resume().await;
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn resume(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed");
        wait_for_port(self.port, true).await;
    }

    pub async fn stop(&self) {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl stop failed");
        wait_for_port(self.port, false).await;
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
