//! Preflight: everything `run` needs from this host, checked before anything is bound or
//! attached. `check-config` runs the same checks, so a config it calls "ok" starts (short of a
//! port conflict). Every message starts with the field path it is about.
//!
//! The checks: listen addresses parse; `intercept` users exist in the passwd database and its
//! cgroup paths are cgroup v2 directories; the MITM CA files are readable and a matching pair;
//! `file` secret sources are readable; the jail's audit copy does not exist yet; with
//! `intercept.mode: ebpf`, the kernel, BTF, bpffs, cgroup v2 and privileges the programs need.
//! (Variables the config names, such as `postgres.client.password_env`, are checked when the
//! config is loaded.)

use std::path::Path;

use nix::sys::statfs::{FsType, statfs};

use crate::config::intercept::Identities;
use crate::config::{Config, ListenAddr, TlsMode};

use super::identity::Table;

/// Oldest kernel with everything the programs use (cgroup `bpf_link`s, `connect`/`sendmsg`
/// hooks for v4 and v6, `bpf_get_netns_cookie` in cgroup hooks).
const MIN_KERNEL: (u32, u32) = (5, 8);
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;
/// `statfs(2)` magics of cgroup v2 and of bpffs.
const CGROUP2_SUPER_MAGIC: FsType = FsType(0x6367_7270);
const BPF_FS_MAGIC: FsType = FsType(0xcafe_4a11);

/// What the host lacks (errors: `run` refuses to start) and what the operator should know
/// (warnings: logged at startup).
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Unreadable `file` secret sources. `check-config` reports them as errors; `run` only warns,
    /// because sources are retried in the background (a secret mounted after start is picked
    /// up) and an entry with `require: true` fails closed meanwhile.
    pub secret_files: Vec<String>,
}

/// Runs every check. `config_file` is the YAML the config came from, scanned for `file`
/// secret sources (the embedded default config has none).
pub fn check(cfg: &Config, config_file: Option<&Path>) -> Report {
    let mut r = files_and_identities(cfg, config_file);
    if cfg.intercept.enabled() {
        ebpf_prerequisites(cfg, &mut r.errors);
    }
    r
}

/// [`for_install`] in the shape `install` takes (`install::HostCheck`).
pub fn install_host_check(
    cfg: &Config,
    config_file: Option<&Path>,
    dry_run: bool,
) -> crate::install::HostFindings {
    let r = for_install(cfg, config_file, dry_run);
    crate::install::HostFindings {
        errors: r.errors,
        warnings: r.warnings,
    }
}

/// `install`'s preflight: what `check-config` checks (unreadable file sources are errors). A
/// dry run (`install --root`) attaches nothing, so there the eBPF prerequisites are warnings.
pub fn for_install(cfg: &Config, config_file: Option<&Path>, dry_run: bool) -> Report {
    let mut r = files_and_identities(cfg, config_file);
    r.errors.append(&mut r.secret_files);
    if cfg.intercept.enabled() {
        let mut ebpf = Vec::new();
        ebpf_prerequisites(cfg, &mut ebpf);
        if dry_run {
            r.warnings.extend(
                ebpf.into_iter()
                    .map(|e| format!("{e} (a real install would stop here)")),
            );
        } else {
            r.errors.extend(ebpf);
        }
    }
    r
}

/// Every check but the eBPF prerequisites.
fn files_and_identities(cfg: &Config, config_file: Option<&Path>) -> Report {
    let mut r = Report::default();
    listen_addresses(cfg, &mut r.errors);
    identities(cfg, &Table::read(), &mut r.errors);
    ca_files(cfg, &mut r.errors);
    audit_copy(cfg, &mut r.errors);
    if let Some(text) = config_file.and_then(|p| std::fs::read_to_string(p).ok()) {
        file_sources(&text, &mut r.secret_files);
    }
    r.warnings = warnings(cfg);
    r
}

/// Surprises worth a startup line: a setting that is valid but lifts a guard.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(list) = &cfg.proxy.upstream_deny_cidrs {
        let nets: Vec<ipnet::IpNet> = list.iter().map(|c| c.0).collect();
        let lifted: Vec<&str> = crate::config::DEFAULT_DENY_CIDRS
            .iter()
            .copied()
            .filter(|d| d.parse::<ipnet::IpNet>().is_ok_and(|d| !nets.contains(&d)))
            .collect();
        if !lifted.is_empty() {
            out.push(format!(
                "proxy.upstream_deny_cidrs: setting it replaces the default guard, so {} \
                 (loopback / cloud metadata) are now reachable upstreams; list them to keep them denied",
                lifted.join(", ")
            ));
        }
    }
    out
}

fn listen_addresses(cfg: &Config, errors: &mut Vec<String>) {
    let mut check = |field: &str, a: Option<&ListenAddr>| {
        if let Some(Err(e)) = a.map(ListenAddr::socket_addr) {
            errors.push(format!("{field}: {e}"));
        }
    };
    check("proxy.http_listen", Some(&cfg.proxy.http_listen));
    check("proxy.https_listen", Some(&cfg.proxy.https_listen));
    check("proxy.tunnel_listen", cfg.proxy.tunnel_listen.as_ref());
    check("metrics.listen", Some(&cfg.metrics.listen));
    check("management.listen", cfg.management.listen.as_ref());
    if cfg.dns.enabled {
        check("dns.listen", Some(&cfg.dns.listen));
    }
    check("dns.upstream_resolver", cfg.dns.upstream_resolver.as_ref());
    check("postgres.listen", cfg.postgres.listen.as_ref());
    let l = &cfg.intercept.listeners;
    check("intercept.listeners.http", l.http.as_ref());
    check("intercept.listeners.https", l.https.as_ref());
    check("intercept.listeners.dns", l.dns.as_ref());
}

/// Every identity set of `intercept`, with its field path.
fn identity_sets(cfg: &Config) -> Vec<(String, Identities)> {
    let i = &cfg.intercept;
    let mut out = vec![
        ("intercept.governed".to_string(), i.governed.clone()),
        ("intercept.exempt".to_string(), i.exempt.clone()),
        ("intercept.deny".to_string(), i.deny.clone()),
    ];
    for (n, p) in i.policies.iter().enumerate() {
        out.push((format!("intercept.policies[{n}]"), p.identities()));
    }
    out
}

/// The `intercept` identity checks alone (users exist, cgroup paths are cgroup v2
/// directories): what a reload re-checks before it writes anything to the kernel maps.
pub fn intercept_identities(cfg: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    identities(cfg, &Table::read(), &mut errors);
    errors
}

fn identities(cfg: &Config, passwd: &Table, errors: &mut Vec<String>) {
    if !cfg.intercept.enabled() {
        return;
    }
    for (field, ids) in identity_sets(cfg) {
        for (n, user) in ids.users.iter().enumerate() {
            if passwd.uid_of(user).is_none() {
                errors.push(format!(
                    "{field}.users[{n}]: unknown user {user:?} (not in /etc/passwd; create it, e.g. `useradd --system {user}`, or remove it)"
                ));
            }
        }
        for (n, path) in ids.cgroups.iter().enumerate() {
            if let Err(e) = cgroup_v2_dir(path) {
                errors.push(format!("{field}.cgroups[{n}]: {e}"));
            }
        }
    }
}

/// `path` exists, is a directory and lies on a cgroup v2 filesystem.
fn cgroup_v2_dir(path: &Path) -> Result<(), String> {
    let hint = || match crate::ebpf::cgroup2_mount() {
        Ok(m) => format!(
            "cgroup v2 is mounted at {} on this host; create the cgroup below it (mkdir)",
            m.display()
        ),
        Err(e) => e.to_string(),
    };
    if !path.is_dir() {
        return Err(format!(
            "{} does not exist or is not a directory ({})",
            path.display(),
            hint()
        ));
    }
    match statfs(path) {
        Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(()),
        Ok(_) => Err(format!(
            "{} is not a cgroup v2 directory (a v1 hierarchy?) ({})",
            path.display(),
            hint()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn ca_files(cfg: &Config, errors: &mut Vec<String>) {
    if cfg.tls.mode != TlsMode::Mitm {
        return;
    }
    let (Some(cert), Some(key)) = (&cfg.tls.ca_cert, &cfg.tls.ca_key) else {
        // Missing keys are reported by config validation.
        return;
    };
    let outdir = cert
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut missing = false;
    for (field, p) in [("tls.ca_cert", cert), ("tls.ca_key", key)] {
        if let Err(e) = std::fs::File::open(p) {
            missing = true;
            errors.push(format!(
                "{field}: cannot read {}: {e} (create a CA with `iron-agent generate-ca --outdir {}`)",
                p.display(),
                outdir.display()
            ));
        }
    }
    if missing {
        return;
    }
    if let Err(e) = crate::tls::CertAuthority::load(cert, key) {
        errors.push(format!(
            "tls.ca_cert/tls.ca_key: {e} (they must be the certificate and key of one CA, e.g. from `iron-agent generate-ca --outdir {}`)",
            outdir.display()
        ));
    }
}

/// `run --summary`'s private copy of the audit log (`log.audit_copy`) is created with
/// `create_new`, so an existing file there (a leftover, or one planted in the temp directory)
/// would stop the start.
fn audit_copy(cfg: &Config, errors: &mut Vec<String>) {
    if let Some(p) = &cfg.log.audit_copy
        && p.symlink_metadata().is_ok()
    {
        errors.push(format!(
            "log.audit_copy (run --summary): {} already exists; the agent creates this file itself and never writes through an existing one (remove it)",
            p.display()
        ));
    }
}

/// `file` secret sources anywhere in the document (every transform kind nests them
/// differently, so the YAML is walked generically), by field path.
fn file_sources(text: &str, errors: &mut Vec<String>) {
    let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return;
    };
    let mut found = Vec::new();
    walk(&doc, String::new(), &mut found);
    for (field, path) in found {
        if let Err(e) = std::fs::File::open(&path) {
            errors.push(format!("{field}.path: cannot read {path}: {e}"));
        }
    }
}

fn walk(v: &serde_json::Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("type").and_then(|t| t.as_str()) == Some("file")
                && let Some(p) = m.get("path").and_then(|p| p.as_str())
            {
                out.push((at.clone(), p.to_string()));
            }
            for (k, v) in m {
                let sub = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk(v, sub, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(v, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn ebpf_prerequisites(cfg: &Config, errors: &mut Vec<String>) {
    let field = "intercept.mode: ebpf";
    if !crate::ebpf::object_built() {
        errors.push(format!(
            "{field}: {}",
            crate::ebpf::InterceptError::ObjectNotBuilt
        ));
    }
    if let Some((major, minor)) = kernel_version()
        && (major, minor) < MIN_KERNEL
    {
        errors.push(format!(
            "{field}: kernel {major}.{minor} is too old (needs {}.{} or later)",
            MIN_KERNEL.0, MIN_KERNEL.1
        ));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        errors.push(format!(
            "{field}: the kernel has no BTF (/sys/kernel/btf/vmlinux missing; needs CONFIG_DEBUG_INFO_BTF=y)"
        ));
    }
    if let Err(e) = crate::ebpf::cgroup2_mount() {
        errors.push(format!("{field}: {e}"));
    }
    let missing = missing_caps(&std::fs::read_to_string("/proc/self/status").unwrap_or_default());
    if !missing.is_empty() {
        errors.push(format!(
            "{field}: needs root or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN to load and attach the programs (missing {}; try sudo)",
            missing.join(", ")
        ));
    }
    errors.extend(pin_dir_on_bpffs(&cfg.intercept.pin_dir));
}

/// `intercept.pin_dir` lies below the host's bpffs mount point (mounted there if needed) or on
/// another bpffs.
fn pin_dir_on_bpffs(pin_dir: &Path) -> Option<String> {
    (!pin_dir.starts_with(crate::ebpf::BPFFS_MOUNT) && !on_bpffs(pin_dir)).then(|| {
        format!(
            "intercept.pin_dir: {} is not on a bpffs mount (use a directory below {}, or mount bpffs: mount -t bpf bpf DIR)",
            pin_dir.display(),
            crate::ebpf::BPFFS_MOUNT
        )
    })
}

/// Whether `path` or its closest existing ancestor is on a BPF filesystem.
fn on_bpffs(path: &Path) -> bool {
    let existing = path.ancestors().find(|p| p.exists());
    existing
        .and_then(|p| statfs(p).ok())
        .is_some_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The capabilities the programs need that `CapEff` (from /proc/self/status) lacks.
pub fn missing_caps(status: &str) -> Vec<&'static str> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1u64 << bit) == 0)
    .map(|(_, name)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        crate::config::load_str(yaml, &|_| None).unwrap()
    }

    const SNI: &str = "dns:\n  proxy_ip: 127.0.0.1\ntls:\n  mode: sni-only\n";

    #[test]
    fn capabilities_from_status() {
        let all = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(missing_caps(all).is_empty());
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(
            missing_caps(none),
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
        let net_only = format!("CapEff:\t{:016x}\n", 1u64 << CAP_NET_ADMIN);
        assert_eq!(missing_caps(&net_only), ["CAP_BPF", "CAP_SYS_ADMIN"]);
    }

    #[test]
    fn unknown_user_and_bad_cgroup_name_their_field() {
        let c = cfg(&format!(
            "{SNI}intercept:\n  mode: ebpf\n  governed:\n    users: [root, no-such-user-xyz]\n    cgroups: [/tmp]\n  policies:\n    - users: [also-missing]\n"
        ));
        let mut errors = Vec::new();
        identities(
            &c,
            &Table::parse("root:x:0:0::/root:/bin/sh\n"),
            &mut errors,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("intercept.governed.users[1]: unknown user \"no-such-user-xyz\"")
        );
        assert!(errors[1].starts_with("intercept.governed.cgroups[0]: /tmp is not a cgroup v2"));
        assert!(errors[2].starts_with("intercept.policies[0].users[0]: unknown user"));
    }

    #[test]
    fn missing_ca_names_field_and_generate_ca() {
        let c = cfg(
            "dns:\n  proxy_ip: 127.0.0.1\ntls:\n  ca_cert: /nonexistent/d/ca.crt\n  ca_key: /nonexistent/d/ca.key\n",
        );
        let mut errors = Vec::new();
        ca_files(&c, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("tls.ca_cert: cannot read /nonexistent/d/ca.crt"));
        assert!(errors[0].contains("iron-agent generate-ca --outdir /nonexistent/d"));
        assert!(errors[1].starts_with("tls.ca_key:"));
    }

    #[test]
    fn file_sources_found_by_path() {
        let text = "transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: file, path: /nonexistent/tok}\n          proxy_value: x\n        - source: {type: env, var: X}\n";
        let mut errors = Vec::new();
        file_sources(text, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "transforms[0].config.secrets[0].source.path: cannot read /nonexistent/tok"
            ),
            "{errors:?}"
        );
    }

    /// A PostgreSQL proxy block whose listen address is a host name (its password variable `PW`
    /// is set where it is loaded).
    const PG: &str = "postgres:\n  listen: \"db.internal:6432\"\n  client: {user: u, password_env: PW}\n  upstreams:\n    - database: app\n      dsn: {type: env, var: DSN}\n";

    #[test]
    fn listen_addresses_that_are_not_ip_port_name_their_field() {
        let yaml = format!(
            "{SNI}proxy:\n  http_listen: \"proxy.local:8080\"\n  https_listen: \"127.0.0.1:8443\"\n{PG}"
        );
        let c = crate::config::load_str(&yaml, &|k| (k == "PW").then(|| "pw".into())).unwrap();
        let mut errors = Vec::new();
        listen_addresses(&c, &mut errors);
        assert_eq!(
            errors,
            [
                "proxy.http_listen: \"proxy.local\" is not an IP address",
                "postgres.listen: \"db.internal\" is not an IP address",
            ]
        );
        let mut errors = Vec::new();
        listen_addresses(&cfg(SNI), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn existing_audit_copy_names_its_field() {
        let path = std::env::temp_dir().join(format!(
            "iron-agent-preflight-{}.audit.jsonl",
            std::process::id()
        ));
        let mut c = cfg(SNI);
        c.log.audit_copy = Some(path.clone());
        let mut errors = Vec::new();
        audit_copy(&c, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        std::fs::write(&path, "planted").unwrap();
        audit_copy(&c, &mut errors);
        let _ = std::fs::remove_file(&path);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!(
                "log.audit_copy (run --summary): {} already exists",
                path.display()
            )),
            "{errors:?}"
        );
    }

    #[test]
    fn pin_dir_must_be_on_bpffs() {
        assert_eq!(pin_dir_on_bpffs(Path::new("/sys/fs/bpf/iron-agent")), None);
        let elsewhere = std::env::temp_dir().join("iron-agent-pins");
        let e = pin_dir_on_bpffs(&elsewhere).unwrap();
        assert!(
            e.starts_with(&format!(
                "intercept.pin_dir: {} is not on a bpffs mount",
                elsewhere.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn empty_deny_list_warns_about_the_lifted_guard() {
        let w = warnings(&cfg(&format!("{SNI}proxy:\n  upstream_deny_cidrs: []\n")));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("127.0.0.0/8") && w[0].contains("169.254.169.254/32"));
        assert!(warnings(&cfg(SNI)).is_empty());
    }
}
