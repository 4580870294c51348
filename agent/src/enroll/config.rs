//! The config `init` writes: host settings (generated, or the operator's `--config`) plus a
//! `control_plane` block naming the control plane and the stored token file. Managed mode
//! takes the pipeline from the control plane, so the generated configs have no `transforms`.

use std::path::Path;

/// Name of the proxy token file in the state directory.
pub const TOKEN_FILE: &str = "proxy-token";
/// Name of the config `init --no-service` writes into the state directory.
pub const CONFIG_FILE: &str = "config.yaml";

fn quote(s: &str) -> String {
    // JSON string syntax is valid YAML and escapes anything odd in a path or URL.
    serde_json::Value::from(s).to_string()
}

/// The `control_plane` block (top level).
pub fn control_plane_block(url: &str, token_file: &Path, allow_insecure: bool) -> String {
    let mut b = format!(
        "control_plane:\n  url: {}\n  token_file: {}\n  poll_interval: 10s\n",
        quote(url),
        quote(&token_file.to_string_lossy())
    );
    if allow_insecure {
        b.push_str("  allow_insecure: true\n");
    }
    b
}

/// For the service (`init`, `install --enrollment-token`): what `iron-agent install` generates
/// (eBPF interception, loopback listeners, the CA in /etc/iron-agent), without its allowlist.
pub fn service_config(users: &[String], cgroups: &[std::path::PathBuf]) -> String {
    let text = crate::install::generated_config(&[], users, cgroups);
    let mut out = String::from(
        "# Written by `iron-agent init`: managed mode. Policy and credentials come from the control\n\
         # plane (control_plane below); the rest of this file is this host's and may be edited.\n",
    );
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("# Written by") {
            continue;
        }
        // The top-level `transforms:` block: managed mode ignores it, so it is not written.
        if line == "transforms:" {
            skipping = true;
            continue;
        }
        if skipping && (line.starts_with(' ') || line.starts_with('-')) {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// For `init --no-service`: a config to run in the foreground (`iron-agent run --config`),
/// shaped like the embedded default (loopback listeners, no interception: workloads use the
/// agent as their proxy), with the CA in the state directory.
pub fn foreground_config(state_dir: &Path) -> String {
    let ca = |name: &str| quote(&state_dir.join(name).to_string_lossy());
    format!(
        "# Written by `iron-agent init --no-service`: managed mode. Policy and credentials come from\n\
         # the control plane (control_plane below); the rest of this file is this host's.\n\
         # Run with: iron-agent run --config {}\n\
         dns:\n  listen: \"127.0.0.1:8053\"\n  proxy_ip: \"127.0.0.1\"\n\
         proxy:\n  http_listen: \"127.0.0.1:8080\"\n  https_listen: \"127.0.0.1:8443\"\n\
         metrics:\n  listen: \"127.0.0.1:9090\"\n\
         tls:\n  ca_cert: {}\n  ca_key: {}\n\
         log:\n  level: info\n",
        state_dir.join(CONFIG_FILE).display(),
        ca("ca.crt"),
        ca("ca.key"),
    )
}

/// Whether `text` has a top-level `control_plane` key (init writes that block itself).
pub fn has_control_plane(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("control_plane")
            .is_some_and(|r| r.trim_start().starts_with(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn managed(text: String) -> crate::config::Config {
        let block = control_plane_block(
            "http://127.0.0.1:8090",
            Path::new("/var/lib/x/proxy-token"),
            false,
        );
        crate::config::load_str(&format!("{text}{block}"), &|_| None).unwrap()
    }

    #[test]
    fn service_config_is_install_s_without_transforms() {
        let text = service_config(&["ci".into()], &[]);
        assert!(!text.contains("transforms"), "{text}");
        let cfg = managed(text);
        assert!(cfg.transforms.is_empty());
        assert_eq!(
            cfg.tls.ca_cert,
            Some(PathBuf::from(crate::install::layout::CA_CERT))
        );
        assert_eq!(
            cfg.control_plane.token_file,
            Some(PathBuf::from("/var/lib/x/proxy-token"))
        );
        assert_eq!(
            cfg.control_plane.url.as_deref(),
            Some("http://127.0.0.1:8090")
        );
    }

    #[test]
    fn foreground_config_keeps_the_ca_in_the_state_dir() {
        let cfg = managed(foreground_config(Path::new("/srv/agent state")));
        assert_eq!(
            cfg.tls.ca_key,
            Some(PathBuf::from("/srv/agent state/ca.key"))
        );
        assert!(cfg.transforms.is_empty());
    }

    #[test]
    fn control_plane_key_is_found_at_top_level_only() {
        assert!(has_control_plane("a: 1\ncontrol_plane:\n  url: x\n"));
        assert!(has_control_plane("control_plane :\n"));
        assert!(!has_control_plane("proxy:\n  control_plane: 1\n"));
    }
}
