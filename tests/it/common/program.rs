//! Harness for tests that run real programs: the consul-dns binary and the resolvers put in
//! front of it (unbound, dnsmasq, BIND, glibc). Every process is killed when its guard is
//! dropped, also when the test fails; temporary directories and network namespaces are
//! removed the same way.
//!
//! `tests/it/main.rs` includes it as `crate::program`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

pub const BIN: &str = env!("CARGO_BIN_EXE_consul-dns");

/// With this environment variable set (CI sets it), a test that cannot run fails instead of
/// being skipped.
pub const NO_SKIP_ENV: &str = "CONSUL_DNS_TESTS_NO_SKIP";

/// Prints `SKIPPED <test>: <why>` and returns from the test, or fails it when
/// [`NO_SKIP_ENV`] is set.
#[macro_export]
macro_rules! skip {
    ($test:expr, $($why:tt)+) => {{
        let why = format!($($why)+);
        if std::env::var_os($crate::program::NO_SKIP_ENV).is_some() {
            panic!("{} cannot run ({} is set): {why}", $test, $crate::program::NO_SKIP_ENV);
        }
        println!("SKIPPED {}: {why}", $test);
        return;
    }};
}

/// The environment variables consul-dns reads, as Consul's client does.
pub const CONSUL_ENV: [&str; 9] = [
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
    "CONSUL_HTTP_SSL_VERIFY",
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique short name for this process: `<prefix><pid>x<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(&format!("consul-dns-{prefix}-")));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The path of an installed program, looked up in PATH and the sbin directories (which a
/// non-root PATH may lack).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A port free for both UDP and TCP on 127.0.0.1 (for programs that must be given one).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// A running program; killed on drop. Its stdout and stderr are collected, together and
/// each apart.
pub struct Program {
    pub name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    /// Its stdout, then its stderr, on their own.
    streams: [Arc<Mutex<String>>; 2],
}

impl Program {
    pub fn spawn(name: &str, mut cmd: Command) -> Program {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        // The Consul client's variables of the environment running the tests are dropped;
        // those the test sets itself are kept.
        for var in CONSUL_ENV {
            if !cmd.get_envs().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("{name}: cannot start {cmd:?}: {e}"),
        };
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Arc<Mutex<String>>; 2] = Default::default();
        for (stream, apart) in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .zip(streams.clone())
        .filter_map(|(stream, apart)| Some((stream?, apart)))
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                    drop(out);
                    let mut apart = apart.lock().unwrap_or_else(|e| e.into_inner());
                    apart.push_str(&line);
                    apart.push('\n');
                }
            });
        }
        Program {
            name: name.to_string(),
            child,
            output,
            streams,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.streams[0]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.streams[1]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until its output contains `needle`; returns the output then.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads finish.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not print {needle:?} within {timeout:?}:\n{out}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit; returns the exit code and its output.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.output());
            }
            assert!(
                start.elapsed() < timeout,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill {} {signal}", self.name);
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.output());
        }
    }
}

/// consul-dns as a user runs it: started with `args` in `cwd`, ready once it logs where it
/// listens.
pub struct ConsulDns {
    pub program: Program,
    /// The first `--listen` address, port resolved.
    pub addr: SocketAddr,
}

impl ConsulDns {
    pub fn start(args: &[&str], cwd: &Path) -> ConsulDns {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(cwd);
        ConsulDns::start_command("consul-dns", cmd)
    }

    /// Starts `cmd` (consul-dns, possibly behind `ip netns exec`).
    pub fn start_command(name: &str, cmd: Command) -> ConsulDns {
        let mut program = Program::spawn(name, cmd);
        let out = program.wait_for_output("listening on ", Duration::from_secs(15));
        let addr = out
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {out}"));
        ConsulDns { program, addr }
    }
}

/// The emulator with the demo catalog and consul-dns (the binary) reading from it,
/// started with `extra` arguments besides the Consul address, a loopback port and no
/// static zones.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub emu: consul_emulator::Emulator,
    pub dir: TempDir,
    pub dns: ConsulDns,
}

pub fn world(test: &str, extra: &[&str]) -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let emu = rt.block_on(crate::common::emulator());
    emu.seed_demo();
    let dir = TempDir::new(test);
    let url = emu.url();
    let mut args = vec![
        "--consul-addr",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--zones",
        "",
    ];
    args.extend_from_slice(extra);
    let dns = ConsulDns::start(&args, dir.path());
    World { rt, emu, dir, dns }
}

/// Runs the binary with `args` to its exit (the Consul client's variables of the test's
/// environment dropped); its exit code (-1 when killed after 30 s) and its stderr.
pub fn run_to_exit(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for var in CONSUL_ENV {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("binary runs");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    // A server meant to refuse to start that starts instead would keep the test forever.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the binary") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().unwrap_or_default();
    (status.and_then(|s| s.code()).unwrap_or(-1), err)
}

/// One DNS query over UDP from `bind` (retried every `retry` until `timeout`); `None` if
/// nothing answered.
pub fn ask_from(
    bind: IpAddr,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    rd: bool,
    timeout: Duration,
) -> Option<Message> {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = rd;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        qtype,
    ));
    let bytes = msg.to_vec().expect("encodes");
    let sock = UdpSocket::bind(SocketAddr::new(bind, 0)).expect("bind client");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = vec![0u8; 65535];
    while start.elapsed() < timeout {
        sock.send_to(&bytes, server).expect("send");
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Ok(reply) = Message::from_vec(&buf[..n]) {
                        if reply.metadata.id == msg.metadata.id {
                            if let Err(e) = crate::common::strict_counts(&buf[..n]) {
                                panic!("the reply to {name} does not decode strictly: {e}");
                            }
                            return Some(reply);
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }
    None
}

/// [`ask_from`] 127.0.0.1 with RD, for 5 s; panics if nothing answers.
pub fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_from(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        server,
        name,
        qtype,
        true,
        Duration::from_secs(5),
    )
    .unwrap_or_else(|| panic!("no answer from {server} for {name} {qtype}"))
}

/// The A/AAAA addresses in a message's answer section, sorted.
pub fn addresses(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks `server` until it answers NOERROR with addresses (resolvers may need a moment).
pub fn addresses_eventually(server: SocketAddr, name: &str, timeout: Duration) -> Vec<IpAddr> {
    poll(timeout, || {
        let m = ask_from(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            server,
            name,
            RecordType::A,
            true,
            Duration::from_secs(2),
        )?;
        (m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
            .then(|| addresses(&m))
    })
    .unwrap_or_else(|| panic!("{server} never answered {name} with addresses"))
}

/// A network namespace (`ip netns add`), with `lo` up and optional files in
/// `/etc/netns/NAME/` (bind-mounted over `/etc/` by `ip netns exec`); deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Needs root and `ip`.
    pub fn new(files: &[(&str, &str)]) -> NetNs {
        let name = unique("cdns");
        let ns = NetNs { name };
        ns.ip(&["netns", "add", &ns.name]);
        if !files.is_empty() {
            let dir = ns.etc_dir();
            std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
            for (file, text) in files {
                std::fs::write(dir.join(file), text).expect("write /etc/netns file");
            }
        }
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new(tool("ip").expect("ip installed"))
            .args(args)
            .output()
            .expect("ip runs");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip netns exec NAME <args>` as a command to adjust and run.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(tool("ip").expect("ip installed"));
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// consul-dns with `args`, run in the namespace from `cwd`, once it listens.
    pub fn consul_dns(&self, name: &str, args: &[&str], cwd: &Path) -> ConsulDns {
        let mut cmd = self.command(BIN, args);
        cmd.current_dir(cwd);
        ConsulDns::start_command(name, cmd)
    }

    /// Runs a command in the namespace; panics unless it succeeds; returns its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self
            .command(argv[0], &argv[1..])
            .output()
            .expect("ip netns exec runs");
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tokio runtime whose threads are all inside the namespace: what its tasks open (an
    /// emulator, a DNS client, an HTTP request) is in the namespace. Run work there with
    /// [`NetNs::block_on`].
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        let path = Path::new("/var/run/netns").join(&self.name);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(move || {
                use std::os::fd::AsRawFd;
                let file = std::fs::File::open(&path).expect("open the netns file");
                // SAFETY: setns on a valid namespace fd; it only changes this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            })
            .build()
            .expect("runtime")
    }

    /// Runs `fut` on one of `rt`'s threads (in the namespace) and waits for it.
    pub fn block_on<T: Send + 'static>(
        rt: &tokio::runtime::Runtime,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match rt.block_on(rt.spawn(fut)) {
            Ok(v) => v,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("task failed: {e}"),
            },
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip").unwrap_or_else(|| PathBuf::from("ip")))
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}
