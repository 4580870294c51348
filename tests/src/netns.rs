//! Privileged test fixtures: network namespaces standing in for remote hosts, test users, and
//! commands run as those users. Root only; every fixture cleans up on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

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

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns del {}; ip link del {} 2>/dev/null",
            self.name, self.veth
        ));
    }
}

/// A system user for governed workloads (created once, kept: creating users is slow).
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    pub fn ensure(name: &str) -> TestUser {
        if !sh(&format!("id -u {name}")).status.success() {
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
