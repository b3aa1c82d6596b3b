//! Replication against a real S3-protocol server: moto's server mode (`moto[server]` from
//! PyPI), installed by the test into a Python virtual environment under Cargo's target folder
//! on first use (set `SESSIONLOG_MOTO_SERVER` to a `moto_server` of your own instead), and
//! started on 127.0.0.1. Requests go through a TCP relay of the test's own, which it can stop
//! and start again to take the server away mid-run. If the server cannot be installed or
//! started, the tests fail and say why.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::observe;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use sessionlog::{
    ChatMessage, Durability, Error, LogStore, Options, Replication, RestorePoint, SessionBackend,
};

/// The moto release the tests install.
const MOTO: &str = "moto[server]==5.2.6";

/// The `moto_server` program: `SESSIONLOG_MOTO_SERVER`, or one installed now (once).
fn moto_server() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    if let Ok(path) = std::env::var("SESSIONLOG_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
    let server = venv.join("bin").join("moto_server");
    if server.exists() {
        return server;
    }
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} to install the S3 server: {e}"));
        assert!(
            out.status.success(),
            "installing the S3 server ({program} {args:?}) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let venv_path = venv.to_str().unwrap();
    run("python3", &["-m", "venv", venv_path]);
    let pip = venv.join("bin").join("pip");
    run(pip.to_str().unwrap(), &["install", "--quiet", MOTO]);
    assert!(
        server.exists(),
        "pip installed moto without {}",
        server.display()
    );
    server
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server on 127.0.0.1, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = free_port();
        let mut child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the S3 server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                panic!("the S3 server exited ({status}) before it listened: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Server { child, port }
    }

    /// Creates a bucket (object_store makes no buckets): one plain HTTP request.
    fn create_bucket(&self, name: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {reply}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to the server that can be taken down (every connection cut, new ones refused)
/// and brought back up.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(server_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (Arc::clone(&up), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up, open }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn back_up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A client of `bucket` through `port`, with short timeouts (a relay that is down fails fast).
fn client(port: u16, bucket: &str) -> Arc<dyn ObjectStore> {
    let store = AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_retry(RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    Arc::new(store)
}

fn restored(replication: &Replication, point: RestorePoint) -> String {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("restored");
    sessionlog::restore(replication, &target, point, &Options::default(), false).unwrap();
    observe(&LogStore::open_read_only(&target).unwrap())
}

#[test]
fn a_store_ships_to_an_s3_server_and_is_restored_at_any_point() {
    let server = Server::start();
    server.create_bucket("agents");
    let replication = Replication::with_store(client(server.port, "agents"), "s3://agents/gw")
        .every(Duration::from_secs(3600));
    let options = Options {
        replicate_to: Some(replication.clone()),
        ..Options::with_durability(Durability::Never)
    };
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    let mut points = Vec::new();
    for i in 0..60 {
        let key = format!("user_{}", i % 5);
        store
            .append(&key, &ChatMessage::user(format!("message {i}")))
            .unwrap();
        if i % 7 == 0 {
            store
                .update_last(&key, &ChatMessage::assistant(format!("edit {i}")))
                .unwrap();
        }
        if i % 10 == 9 {
            store.ship_now().unwrap();
            points.push((store.last_seq(), observe(&store)));
        }
    }
    assert_eq!(
        restored(&replication, RestorePoint::Latest),
        observe(&store)
    );
    for (seq, then) in &points {
        assert_eq!(
            &restored(&replication, RestorePoint::Seq(*seq)),
            then,
            "at {seq}"
        );
    }
    // A second store on the same prefix is refused: S3's create-only put fences it.
    let other = tempfile::tempdir().unwrap();
    let refused = LogStore::open_with(other.path(), options);
    assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
    store.close().unwrap();
}

#[test]
fn a_server_stopped_mid_run_loses_nothing_and_the_store_catches_up() {
    let server = Server::start();
    server.create_bucket("outage");
    let relay = Relay::to(server.port);
    let replication = Replication::with_store(client(relay.port, "outage"), "s3://outage/p")
        .every(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        Options {
            replicate_to: Some(replication.clone()),
            ..Options::with_durability(Durability::Always)
        },
    )
    .unwrap();
    store.append("a", &ChatMessage::user("before")).unwrap();
    store.ship_now().unwrap();
    relay.down();
    for i in 0..30 {
        store
            .append("a", &ChatMessage::user(format!("during {i}")))
            .unwrap();
    }
    assert!(store.ship_now().is_err());
    let status = store.replication_status().unwrap();
    assert!(
        status.last_error.is_some() && status.bytes_behind > 0,
        "{status:?}"
    );
    store
        .append("b", &ChatMessage::user("writes go on"))
        .unwrap();
    relay.back_up();
    let status = store.ship_now().unwrap();
    assert_eq!(status.shipped_seq, store.last_seq());
    assert_eq!(
        restored(&replication, RestorePoint::Latest),
        observe(&store)
    );
    store.close().unwrap();
}

#[test]
fn the_command_ships_to_s3_with_credentials_from_the_environment() {
    let server = Server::start();
    server.create_bucket("cli");
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_owned();
    let env = [
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", server.port)),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let sessionlog = |args: &[&str]| common::sessionlog(args, &env);
    sessionlog(&["demo", &path("source")]);
    sessionlog(&["backup", &path("source"), "s3://cli/team/gateway"]);
    sessionlog(&["restore", "s3://cli/team/gateway", &path("copy")]);
    assert_eq!(
        sessionlog(&["export", &path("copy")]),
        sessionlog(&["export", &path("source")])
    );
}
