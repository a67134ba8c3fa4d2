//! A real S3-compatible server for the sync tests: `moto_server` from the environment
//! `tests/run.sh` provisions, on a free port of 127.0.0.1, killed when dropped.
//!
//! `Moto::signed()` checks request signatures: the three unauthenticated calls moto
//! allows at start-up create an IAM user and its key, and every later request must be
//! signed with that key. `Moto::open()` does not check signatures; the fault tests that
//! restart the server use it, because a restart empties moto, IAM included.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeflow::sync::target::{S3Options, Target};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

/// Access key and secret.
#[derive(Clone, Debug)]
pub struct Creds {
    pub key: String,
    pub secret: String,
}

/// A running moto server.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    pub creds: Creds,
}

fn moto_binary() -> String {
    std::env::var("EDGEFLOW_MOTO").unwrap_or_else(|_| {
        panic!("EDGEFLOW_MOTO is not set: run the tests with ./tests/run.sh, which installs moto[server] from PyPI into target/test-venv and points EDGEFLOW_MOTO at its moto_server")
    })
}

fn python() -> String {
    std::env::var("EDGEFLOW_PYTHON").unwrap_or_else(|_| {
        panic!("EDGEFLOW_PYTHON is not set: run the tests with ./tests/run.sh, which provisions Python with boto3 for the S3 tests")
    })
}

/// A port nobody listens on right now, below the kernel's ephemeral range (32768 and
/// up here): a port the kernel handed out could go to the next outgoing connection of
/// any test before the server meant for it binds it, and a cluster binds its ports
/// again at every restart.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_000;
    let random = RandomState::new();
    for attempt in 0u64..1_000 {
        let port = (LOW + random.hash_one(attempt) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port between {LOW} and {} after 1000 tries",
        LOW + SPAN
    )
}

/// Polls `condition` every 20 ms until it holds; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut reply = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.")
}

impl Moto {
    /// A server checking request signatures, with an IAM user allowed `s3:*`.
    pub fn signed() -> Moto {
        let mut moto = Moto::spawn(free_port(), true);
        let out = moto.admin(&["iam"]);
        let key = json_field(&out, "key");
        let secret = json_field(&out, "secret");
        moto.creds = Creds { key, secret };
        moto
    }

    /// A server that does not check signatures, on `port`.
    pub fn open(port: u16) -> Moto {
        Moto::spawn(port, false)
    }

    fn spawn(port: u16, signed: bool) -> Moto {
        let mut command = Command::new(moto_binary());
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if signed {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server ({}): {e}", moto_binary()));
        let mut moto = Moto {
            child: Some(child),
            port,
            creds: Creds {
                key: "edgeflow-test".into(),
                secret: "edgeflow-test-secret".into(),
            },
        };
        wait_until("moto_server to answer", Duration::from_secs(30), || {
            if let Some(Ok(Some(status))) = moto.child.as_mut().map(Child::try_wait) {
                panic!("moto_server exited at start-up with {status}");
            }
            answers(port)
        });
        moto
    }

    /// Stops the server (SIGKILL); what it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn admin(&self, args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/s3_admin.py");
        let out = Command::new(python())
            .arg(script)
            .arg(args[0])
            .arg(self.endpoint())
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "s3_admin.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a bucket (signed with our key when signatures are checked).
    pub fn bucket(&self, name: &str) {
        self.admin(&["bucket", &self.creds.key, &self.creds.secret, name]);
    }

    /// Keys of multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> String {
        self.admin(&["uploads", &self.creds.key, &self.creds.secret, bucket])
    }

    /// Sets the AWS variables edgeflow reads, for this server and our key.
    pub fn env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        self.env_with(command, &self.creds)
    }

    /// The same with other credentials.
    pub fn env_with<'c>(&self, command: &'c mut Command, creds: &Creds) -> &'c mut Command {
        env_for(command, &self.endpoint(), creds)
    }

    /// The S3 options of our key, for reading the bucket from the test.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            allow_http: true,
            access_key_id: Some(self.creds.key.clone()),
            secret_access_key: Some(self.creds.secret.clone()),
            session_token: None,
        }
    }
}

/// Sets the AWS variables for an endpoint, clearing any the test runner has.
pub fn env_for<'c>(command: &'c mut Command, endpoint: &str, creds: &Creds) -> &'c mut Command {
    command
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", &creds.key)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn json_field(json: &str, field: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {json}"))
        .to_owned()
}

/// Every object under a target, key (relative to its prefix) to bytes.
pub fn target_objects(url: &str, options: &S3Options) -> BTreeMap<String, Vec<u8>> {
    let target = Target::open(url, options).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let listed: Vec<_> = target
            .store
            .list(Some(&target.prefix))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("listing {url}: {e}"));
        let prefix = target.prefix.as_ref();
        let mut objects = BTreeMap::new();
        for meta in listed {
            let read = async { target.store.get(&meta.location).await?.bytes().await };
            let bytes = read
                .await
                .unwrap_or_else(|e| panic!("reading {}: {e}", meta.location));
            let key = meta.location.as_ref();
            let relative = key
                .strip_prefix(prefix)
                .map_or(key, |k| k.trim_start_matches('/'));
            let previous = objects.insert(relative.to_owned(), bytes.to_vec());
            assert!(previous.is_none(), "{relative} listed twice");
        }
        objects
    })
}

/// Puts one object under a target (for conflicts).
pub fn put_object(url: &str, options: &S3Options, relative: &str, bytes: &[u8]) {
    let target = Target::open(url, options).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime
        .block_on(
            target
                .store
                .put(&target.key(relative), bytes.to_vec().into()),
        )
        .unwrap_or_else(|e| panic!("putting {relative}: {e}"));
}

/// The files sync ships from an output root: Parquet outputs and log files, by path
/// relative to the root.
pub fn local_outputs(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "_sync" | "_state") {
                    stack.push(path);
                }
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .unwrap_or_else(|e| panic!("{e}"))
                .to_string_lossy()
                .into_owned();
            let dead_letters = relative.starts_with("_deadletter/") && name.ends_with(".jsonl");
            if name.ends_with(".parquet") || relative.starts_with("_logs/") || dead_letters {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
                files.insert(relative, bytes);
            }
        }
    }
    files
}

/// Asserts the target holds exactly the local output files, byte for byte, once.
pub fn assert_target_mirrors(root: &Path, url: &str, options: &S3Options) {
    let local = local_outputs(root);
    let remote = target_objects(url, options);
    assert!(
        local.keys().any(|k| k.ends_with(".parquet")),
        "no Parquet files under {}",
        root.display()
    );
    let only_local: Vec<&String> = local.keys().filter(|k| !remote.contains_key(*k)).collect();
    let only_remote: Vec<&String> = remote.keys().filter(|k| !local.contains_key(*k)).collect();
    assert!(
        only_local.is_empty() && only_remote.is_empty(),
        "{url} and {} differ: only local {only_local:?}, only in the target {only_remote:?}",
        root.display()
    );
    for (key, bytes) in &local {
        assert!(
            remote[key] == *bytes,
            "{key} differs between local disk and {url}"
        );
    }
}

/// A TCP forwarder on a fixed port in front of a server that can be killed and started
/// again on another port: to the engine it is one endpoint that goes away and comes back
/// (connections are refused while nothing is behind it), and a fresh server can be given
/// its bucket before traffic reaches it.
pub struct Forwarder {
    pub port: u16,
    upstream: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// New connections are taken and never answered (a dead route behind a live hop).
    hanging: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The connections taken while hanging: kept open, never answered.
    held: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    /// Listens on a free port, forwarding nowhere yet.
    pub fn start() -> Forwarder {
        use std::sync::atomic::Ordering;
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot listen: {e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let upstream = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let hanging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to, hang, hold) = (upstream.clone(), hanging.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if hang.load(Ordering::SeqCst) {
                    hold.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(client);
                    continue;
                }
                let port = to.load(Ordering::SeqCst);
                // Nothing behind us: the connection closes at once, like a dead server.
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Forwarder {
            port,
            upstream,
            hanging,
            held,
        }
    }

    /// From now on, connections are taken and never answered, until
    /// [`Forwarder::answer_again`]; those stay unanswered for good, like flows on a
    /// route that died.
    pub fn hang(&self) {
        self.hanging
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// New connections are forwarded again.
    pub fn answer_again(&self) {
        self.hanging
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connections taken and never answered so far.
    pub fn held(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Sends new connections to `port` (0: nowhere).
    pub fn point_at(&self, port: u16) {
        self.upstream
            .store(port, std::sync::atomic::Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT` of the forwarder.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        std::io::copy(&mut from, &mut to).ok();
        to.shutdown(std::net::Shutdown::Both).ok();
        from.shutdown(std::net::Shutdown::Both).ok();
    });
}
