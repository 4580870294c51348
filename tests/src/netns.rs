//! Privileged test fixtures: network namespaces standing in for remote hosts, test users,
//! cgroups, and commands run as those users or in those cgroups. Root only; every fixture
//! cleans up on drop, so a test leaves the machine as it found it.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// For root-only tests: `true` (after saying `SKIP <test>: needs root (<why>)` on stdout and
/// stderr, so a skip is never silent) when not running as root.
pub fn skip_unless_root(why: &str) -> bool {
    if is_root() {
        return false;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("test");
    eprintln!("SKIP {test}: needs root ({why})");
    println!("SKIP {test}: needs root ({why})");
    true
}

/// The start of a root-only test that changes the machine: `None` (after the `SKIP` line of
/// [`skip_unless_root`]) without root, else the machine's turn ([`crate::machine_lock`]), held
/// until the guard drops.
pub fn root_turn(why: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if skip_unless_root(why) {
        return None;
    }
    Some(crate::machine_lock())
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

fn must(cmd: &str) {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace `name` joined to the host by a veth pair: host side `host_ip/24`, namespace side
/// `ns_ip/24` plus the given IPv6 addresses (`/64`, no DAD) on both ends.
pub struct NetNs {
    pub name: String,
    veth: String,
}

impl NetNs {
    pub fn new(name: &str, host: &str, ns: &[&str], host6: &str, ns6: &str) -> NetNs {
        let veth = format!("v{}", &name[..name.len().min(10)]);
        let _ = sh(&format!(
            "ip netns del {name} 2>/dev/null; ip link del {veth} 2>/dev/null"
        ));
        must(&format!("ip netns add {name}"));
        must(&format!("ip link add {veth} type veth peer name {veth}p"));
        must(&format!("ip link set {veth}p netns {name}"));
        must(&format!("ip addr add {host}/24 dev {veth}"));
        must(&format!("ip -6 addr add {host6}/64 dev {veth} nodad"));
        must(&format!("ip link set {veth} up"));
        for a in ns {
            must(&format!(
                "ip netns exec {name} ip addr add {a}/24 dev {veth}p"
            ));
        }
        must(&format!(
            "ip netns exec {name} ip -6 addr add {ns6}/64 dev {veth}p nodad"
        ));
        must(&format!("ip netns exec {name} ip link set {veth}p up"));
        must(&format!("ip netns exec {name} ip link set lo up"));
        NetNs {
            name: name.to_string(),
            veth,
        }
    }

    /// Runs `f` on a thread inside the namespace: sockets it binds live there.
    pub fn spawn_in<F>(&self, f: F) -> std::thread::JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).expect("open netns");
        std::thread::spawn(move || {
            // SAFETY: setns(2) on this thread only, with a valid namespace fd.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns failed");
            f();
        })
    }
}

impl NetNs {
    /// Starts servers inside the namespace: `start` runs on a thread there, on a runtime of its
    /// own that keeps running (with whatever `start` spawned or returned) for the rest of the
    /// process; returns what `start` returned once it did (10 s at most).
    pub fn serve_in<T, F>(&self, start: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.spawn_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tx.send(start().await).expect("send");
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("servers in the namespace started")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns del {}; ip link del {} 2>/dev/null",
            self.name, self.veth
        ));
    }
}

/// A system user for governed workloads. Created if missing and then deleted again on drop; a
/// user that already existed is left as found.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    created: bool,
}

impl TestUser {
    pub fn ensure(name: &str) -> TestUser {
        let created = !sh(&format!("id -u {name}")).status.success();
        if created {
            must(&format!(
                "useradd --system --no-create-home --shell /usr/sbin/nologin {name}"
            ));
        }
        let id = |flag: &str| -> u32 {
            String::from_utf8_lossy(&sh(&format!("id {flag} {name}")).stdout)
                .trim()
                .parse()
                .expect("id")
        };
        TestUser {
            name: name.to_string(),
            uid: id("-u"),
            gid: id("-g"),
            created,
        }
    }

    /// Runs a command as this user, without any proxy settings, bounded in time.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(&[], args)
    }

    /// Like [`TestUser::run`] with exactly the given extra environment variables.
    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = Command::new("timeout");
        c.arg("20")
            .arg("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/tmp")
            .envs(env.iter().copied());
        c.output().expect("run as test user")
    }

    pub fn python(&self, code: &str) -> Output {
        self.run(&["/usr/bin/python3", "-c", code])
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        // Its commands are bounded by `timeout`; one may still be exiting, and userdel refuses
        // a user with live processes.
        for _ in 0..50 {
            if sh(&format!("userdel {}", self.name)).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = sh(&format!("userdel --force {}", self.name));
    }
}

/// The cgroup v2 mount point.
pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
        .expect("cgroup2 mount")
}

/// A cgroup below the cgroup2 root (`name` may be nested: `a/b`, its parent created first),
/// removed on drop: drop children before their parent.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create(name: &str) -> TestCgroup {
        let path = cgroup2_mount().join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create cgroup");
        TestCgroup { path }
    }

    /// `python3 -c code` as `user`, run from inside this cgroup (the shell joins it, then drops
    /// to the user): stdout and stderr, trimmed.
    pub fn py(&self, user: &TestUser, code: &str) -> String {
        self.run_py(
            &format!(
                "setpriv --reuid={} --regid={} --clear-groups -- /usr/bin/python3",
                user.uid, user.gid
            ),
            code,
        )
    }

    /// `python3 -c code` as root inside this cgroup: stdout and stderr, trimmed.
    pub fn py_as_root(&self, code: &str) -> String {
        self.run_py("/usr/bin/python3", code)
    }

    fn run_py(&self, python: &str, code: &str) -> String {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {python} -c \"$0\"",
            self.path.display()
        );
        let out = Command::new("timeout")
            .args(["20", "sh", "-c", &script, code])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("run in cgroup");
        output_text(&out)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The last processes in it may still be exiting.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A command's stdout and stderr, trimmed.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

/// `python3 -c` snippet: connect TCP and print `ok` or the errno name.
pub fn py_connect(addr: SocketAddr) -> String {
    let fam = if addr.is_ipv4() {
        "AF_INET"
    } else {
        "AF_INET6"
    };
    format!(
        "import socket,errno\ns=socket.socket(socket.{fam},socket.SOCK_STREAM)\ns.settimeout(5)\ntry:\n  s.connect(('{}',{}))\n  print('ok')\nexcept OSError as e:\n  print(errno.errorcode.get(e.errno,str(e)))",
        addr.ip(),
        addr.port()
    )
}
